#!/usr/bin/env python3
"""Baseline for bench/queue_bench: put+get throughput of multiprocessing.Manager().Queue().

Usage: queue_baseline.py N RUNS
Starts one Manager (its server process), then RUNS times puts and gets N items in a
loop (q.put(i); q.get()) through the queue proxy, and prints one line per run:
  ops_per_sec <float>
where ops counts puts and gets (2N per run).
"""
import multiprocessing
import sys
import time


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    with multiprocessing.Manager() as manager:
        q = manager.Queue()
        for _ in range(min(n, 1000)):  # warm-up: connection and proxy set up
            q.put(b"x")
            q.get()
        item = b"x" * 16
        for _ in range(runs):
            start = time.perf_counter()
            for _ in range(n):
                q.put(item)
                q.get()
            elapsed = time.perf_counter() - start
            print(f"ops_per_sec {2 * n / elapsed:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
