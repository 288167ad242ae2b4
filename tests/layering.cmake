# scripts/check-includes.sh (layering, include cycles) is run by scripts/lint.sh; this shows it can fail.
add_test(NAME layering.check_includes
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/layering/check_includes.test.sh ${CMAKE_SOURCE_DIR})
set_tests_properties(layering.check_includes PROPERTIES LABELS unit TIMEOUT 120)
