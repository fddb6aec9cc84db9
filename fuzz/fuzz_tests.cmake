# Registers short runs of the fuzz targets as ctest tests (label "fuzz") in the normal
# (gcc) build. The fuzzers themselves come from a separate clang build, by default
# ./build-fuzz (scripts/test.sh builds it); FORKPOOL_FUZZ_BUILD_DIR overrides it at
# configure time or, as an environment variable, when the tests run. A missing fuzzer
# binary makes its test SKIPPED, not passed.
set(FORKPOOL_FUZZ_BUILD_DIR "${PROJECT_SOURCE_DIR}/build-fuzz" CACHE PATH
    "Build directory of the clang -DFORKPOOL_FUZZ=ON build whose fuzzers ctest runs")
set(FORKPOOL_FUZZ_SECONDS 20 CACHE STRING "Seconds each fuzzer runs under ctest")

foreach(target frame_decoder worker_connection control packed_items)
  add_test(NAME fuzz_${target}
    COMMAND ${PROJECT_SOURCE_DIR}/fuzz/run_fuzzer.sh
            ${FORKPOOL_FUZZ_BUILD_DIR} ${target}_fuzzer
            ${PROJECT_SOURCE_DIR}/fuzz/corpus/${target} ${FORKPOOL_FUZZ_SECONDS})
  set_tests_properties(fuzz_${target} PROPERTIES
    LABELS fuzz SKIP_RETURN_CODE 77 TIMEOUT 120)
endforeach()
