"""Python multiprocessing baseline for start_bench: process start from the forkserver
(Process(target=f).start()/join() per process), Pool(N) ready time (every worker has
run its initializer), and the recycle rate of Pool(2, maxtasksperchild=1). Prints one
JSON object: medians over --reps repetitions and the per-rep figures."""
import argparse
import json
import multiprocessing
import statistics
import time


def noop():
    pass


def task(x):
    return x


def _ready(queue):
    queue.put(1)


def pool_ready_ms(ctx, processes):
    queue = ctx.SimpleQueue()
    t0 = time.perf_counter()
    pool = ctx.Pool(processes, initializer=_ready, initargs=(queue,))
    for _ in range(processes):
        queue.get()
    ms = (time.perf_counter() - t0) * 1000
    pool.terminate()
    pool.join()
    return ms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--processes-per-rep", type=int, default=20)
    ap.add_argument("--recycle-tasks", type=int, default=200)
    args = ap.parse_args()
    out = {}

    for method in ("forkserver", "fork"):
        ctx = multiprocessing.get_context(method)
        p = ctx.Process(target=noop)  # starts the forkserver itself: not timed
        p.start()
        p.join()
        start_join, start_only = [], []
        for _ in range(args.reps):
            sj, so = [], []
            for _ in range(args.processes_per_rep):
                t0 = time.perf_counter()
                p = ctx.Process(target=noop)
                p.start()
                t1 = time.perf_counter()
                p.join()
                sj.append((time.perf_counter() - t0) * 1000)
                so.append((t1 - t0) * 1000)
            start_join.append(statistics.median(sj))
            start_only.append(statistics.median(so))
        out[f"{method}_process_start_join_ms"] = statistics.median(start_join)
        out[f"{method}_process_start_ms"] = statistics.median(start_only)
        out[f"reps_{method}_process_start_join_ms"] = start_join

        for processes in (1, 2):
            ready = [pool_ready_ms(ctx, processes) for _ in range(args.reps)]
            out[f"{method}_pool{processes}_ready_ms"] = statistics.median(ready)
            out[f"reps_{method}_pool{processes}_ready_ms"] = ready

        rates = []
        for _ in range(args.reps):
            with ctx.Pool(2, maxtasksperchild=1) as pool:
                pool.apply(task, (0,))
                t0 = time.perf_counter()
                results = [pool.apply_async(task, (i,)) for i in range(args.recycle_tasks)]
                for r in results:
                    r.get()
                rates.append(args.recycle_tasks / (time.perf_counter() - t0))
        out[f"{method}_recycle_tasks_per_s"] = statistics.median(rates)
        out[f"reps_{method}_recycle_tasks_per_s"] = rates
    print(json.dumps(out))


if __name__ == "__main__":
    main()
