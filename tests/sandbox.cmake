# Sandbox tests (tests/unit/sandbox, tests/integration/sandbox.test.mjs): an extra "sandbox" label, so
# `ctest -L sandbox` selects them as `ctest -R sandbox` does. They need root (or unprivileged user namespaces)
# and skip by name, with the reason `agentd sandbox check` gives, what the host cannot do.
file(GLOB SANDBOX_UNIT_TESTS CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/unit/sandbox/test_*.c)
foreach(src ${SANDBOX_UNIT_TESTS})
  get_filename_component(name ${src} NAME_WE)
  if(TEST unit.${name})
    set_tests_properties(unit.${name} PROPERTIES LABELS "unit;sandbox")
  endif()
endforeach()
if(TEST integration.sandbox)
  set_tests_properties(integration.sandbox PROPERTIES LABELS "integration;sandbox" RESOURCE_LOCK host_mounts)
endif()
# The C API test also drives a zygote pool, which execs the agentd binary.
if(TEST unit.test_sandbox_api)
  set_tests_properties(unit.test_sandbox_api PROPERTIES ENVIRONMENT "AGENTD_BIN=$<TARGET_FILE:agentd>")
endif()
# The service test drives zygote pools too.
if(TEST unit.test_sandbox_service)
  set_tests_properties(unit.test_sandbox_service PROPERTIES ENVIRONMENT "AGENTD_BIN=$<TARGET_FILE:agentd>")
endif()
if(TEST integration.sandbox_service)
  set_tests_properties(integration.sandbox_service PROPERTIES LABELS "integration;sandbox" RESOURCE_LOCK host_mounts)
endif()
