"""Shared timing helper of the benchmark scripts (run them as ``python benchmarks/bench_*.py``)."""
import statistics
import time


def median_times(fns, repeats, warmup=2):
    """Median wall time of each function; the repeats are interleaved so that load changes hit all alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]
