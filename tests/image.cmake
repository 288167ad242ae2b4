# The OCI image test (tests/integration/image.test.mjs, scripts/image.sh): an extra "image" label, so `ctest -L image`
# selects it; it builds two images and runs them under podman, so it gets more time than other integration tests.
# The downloaded packages are cached in the build tree (image-cache/) and reused by later runs.
if(TEST integration.image)
  # podman mounts overlays in the host mount namespace while it runs: the sandbox suites assert that the host mount
# table is untouched by their runs, so they never run at the same time as this one.
  set_tests_properties(integration.image PROPERTIES LABELS "integration;image" TIMEOUT 900 RESOURCE_LOCK host_mounts)
endif()
