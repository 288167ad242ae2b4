# MCP (issue 12): the official conformance suite against /mcp (tests/mcp/conformance.test.mjs). Its own label and
# a longer timeout: on first use it installs the suite and Node 22 from npm into the build directory.
if(NODE)
  add_test(NAME conformance.mcp COMMAND ${NODE} --test --test-reporter=spec
           ${CMAKE_CURRENT_SOURCE_DIR}/mcp/conformance.test.mjs)
  # RESOURCE_LOCK: both tests install the suite into the same directory on first use; npm run twice at once
  # there fails (ENOTEMPTY), as a CI run once showed.
  set_tests_properties(conformance.mcp PROPERTIES LABELS conformance TIMEOUT 1200 RESOURCE_LOCK mcp_conformance_suite
    ENVIRONMENT "AGENTD_BIN=$<TARGET_FILE:agentd>;AGENTD_SRC=${CMAKE_SOURCE_DIR};AGENTD_BUILD=${CMAKE_BINARY_DIR}")
endif()
# ... and its client scenarios against agentd's MCP client (tests/mcp/conformance_client.test.mjs), through the
# `agentd mcp-client-conformance` test tool.
if(NODE)
  add_test(NAME conformance.mcp_client COMMAND ${NODE} --test --test-reporter=spec
           ${CMAKE_CURRENT_SOURCE_DIR}/mcp/conformance_client.test.mjs)
  set_tests_properties(conformance.mcp_client PROPERTIES LABELS conformance TIMEOUT 1200
    RESOURCE_LOCK mcp_conformance_suite ENVIRONMENT "AGENTD_BIN=$<TARGET_FILE:agentd>;AGENTD_SRC=${CMAKE_SOURCE_DIR};AGENTD_BUILD=${CMAKE_BINARY_DIR}")
endif()
