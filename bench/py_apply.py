"""Python multiprocessing baseline for apply_bench: Pool(2).apply round trip and
pipelined apply_async, with a trivial function. Prints one JSON object (medians over
--reps repetitions, and the per-rep figures)."""
import argparse
import json
import multiprocessing
import statistics
import time


def square(x):
    return x * x


def percentile(values, p):
    values = sorted(values)
    rank = max(1, -(-len(values) * p // 100))  # nearest rank
    return values[min(int(rank), len(values)) - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--tasks", type=int, default=10000)
    args = ap.parse_args()

    p50s, p99s, rates = [], [], []
    with multiprocessing.Pool(2) as pool:
        for i in range(200):  # warm up both workers
            pool.apply(square, (i,))
        for _ in range(args.reps):
            lat = []
            for i in range(args.calls):
                t0 = time.perf_counter_ns()
                pool.apply(square, (i,))
                lat.append((time.perf_counter_ns() - t0) / 1000.0)
            p50s.append(percentile(lat, 50))
            p99s.append(percentile(lat, 99))
        for _ in range(args.reps):
            t0 = time.perf_counter()
            results = [pool.apply_async(square, (i,)) for i in range(args.tasks)]
            for r in results:
                r.get()
            rates.append(args.tasks / (time.perf_counter() - t0))
    print(json.dumps({
        "python": multiprocessing.get_start_method(),
        "apply_p50_us": statistics.median(p50s),
        "apply_p99_us": statistics.median(p99s),
        "apply_async_tasks_per_s": statistics.median(rates),
        "reps_apply_p50_us": p50s,
        "reps_apply_p99_us": p99s,
        "reps_apply_async_tasks_per_s": rates,
    }))


if __name__ == "__main__":
    main()
