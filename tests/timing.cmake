# Tests that compare CPU times (test_linear: doubling the input must not much more than double the time) run
# alone: beside a full parallel ctest, memory and cache contention pushed linear paths to 3x per doubling, and a
# quadratic path gives 4x. RUN_SERIAL keeps the bound meaningful instead of loosening it further.
if(TEST unit.test_linear)
  set_tests_properties(unit.test_linear PROPERTIES RUN_SERIAL TRUE)
endif()
