# queue_bench: shared-queue put+get throughput vs multiprocessing.Manager().Queue()
# (bench/queue_bench.cc, bench/queue_baseline.py). Included from bench/CMakeLists.txt;
# self-contained so it does not depend on the other benchmarks' helpers.
add_executable(forkpool_queue_bench ${CMAKE_CURRENT_LIST_DIR}/queue_bench.cc)
set_target_properties(forkpool_queue_bench PROPERTIES OUTPUT_NAME queue_bench)
target_link_libraries(forkpool_queue_bench
  PRIVATE forkpool::base forkpool::client absl::strings absl::str_format absl::time
          absl::status)
target_compile_definitions(forkpool_queue_bench PRIVATE
  FORKPOOL_BENCH_FORKPOOLD="$<TARGET_FILE:forkpoold>"
  FORKPOOL_BENCH_SOURCE_DIR="${CMAKE_CURRENT_LIST_DIR}")
add_dependencies(forkpool_queue_bench forkpoold forkpool_example_tasks)
