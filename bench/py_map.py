"""Python multiprocessing baseline for map_bench: Pool(processes=2).map(f, range(N))
with f = x*x (square) and f = identity (echo), default chunksize. Prints one JSON
object: medians over --reps repetitions (items/s) and the per-rep figures."""
import argparse
import json
import multiprocessing
import statistics
import time


def square(x):
    return x * x


def echo(x):
    return x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--items", type=int, default=1_000_000)
    args = ap.parse_args()

    out = {"python": multiprocessing.get_start_method()}
    with multiprocessing.Pool(processes=2) as pool:
        pool.map(square, range(1000))  # warm up
        for name, f in (("square", square), ("echo", echo)):
            rates = []
            for _ in range(args.reps):
                t0 = time.perf_counter()
                result = pool.map(f, range(args.items))
                rates.append(args.items / (time.perf_counter() - t0))
                assert len(result) == args.items
                del result
            out[f"map_{name}_items_per_s"] = statistics.median(rates)
            out[f"reps_map_{name}_items_per_s"] = rates
        rates = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            n = sum(1 for _ in pool.imap(square, range(args.items), chunksize=1000))
            rates.append(args.items / (time.perf_counter() - t0))
            assert n == args.items
        out["imap_square_chunk1000_items_per_s"] = statistics.median(rates)
        out["reps_imap_square_chunk1000_items_per_s"] = rates
    print(json.dumps(out))


if __name__ == "__main__":
    main()
