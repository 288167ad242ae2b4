# The OCI image test (tests/integration/image.test.mjs, scripts/image.sh): an extra "image" label, so `ctest -L image`
# selects it; it builds two images and runs them under podman, so it gets more time than other integration tests.
# The downloaded packages are cached in the build tree (image-cache/) and reused by later runs.
if(TEST integration.image)
  set_tests_properties(integration.image PROPERTIES LABELS "integration;image" TIMEOUT 900)
endif()
