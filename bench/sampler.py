"""Section `sampler`: what hit sampling costs per hit in a flood of distinct hits.

The store's thread counts every hit in the Sampler (SPEC 2.1: of identical hits, the
first 5 an hour notify), which remembers at most `capacity` windows and forgets the
oldest beyond that. A flood of distinct hits, which is what an attack looks like, fills
it and then forgets one window per hit. That must cost what a hit costs before the
Sampler is full: with a plain dict it grew to hundreds of microseconds per hit (finding
the oldest entry skipped every entry deleted before it), and ingestion collapsed to a
tenth of its rate after the first 200,000 distinct hits.

Pure CPU, in this process: `capacity` distinct hits fill it, then `flood` x capacity
more are counted; each phase's time per hit, and their ratio, in `runs` rounds. Then
what a full Sampler adds to a full garbage collection, which pauses the whole process:
its windows were dataclass instances, every one walked by each collection (tens of
milliseconds with the Sampler full); they are now tuples of numbers, which the
collector stops tracking.
"""

from __future__ import annotations

import gc
import statistics
import time

from harness import SectionResult, Target
from options import Options
from tocsin.sampling import Sampler

TARGET_RATIO = 2.0  # a hit past capacity costs at most twice one before it
CLIENT_ID = 1


def per_hit(sampler: Sampler, first_key: int, count: int) -> float:
    """Seconds per hit to count `count` distinct hits starting at `first_key`."""
    admit = sampler.admit
    start = time.perf_counter()
    for key in range(first_key, first_key + count):
        admit(CLIENT_ID, key, 0.0)
    return (time.perf_counter() - start) / count


def full_collection() -> float:
    """Seconds one full garbage collection takes (after one that clears what is pending)."""
    gc.collect()
    start = time.perf_counter()
    gc.collect()
    return time.perf_counter() - start


def one_round(capacity: int, flood: int) -> tuple[float, float, float]:
    """Per-hit seconds filling a new Sampler, then flooding it past capacity; and the
    seconds a full Sampler adds to a full garbage collection."""
    without = full_collection()
    sampler = Sampler(capacity=capacity)
    filling = per_hit(sampler, 0, capacity)
    flooding = per_hit(sampler, capacity, flood * capacity)
    if len(sampler) != capacity:
        raise AssertionError(f"the sampler holds {len(sampler)} windows, not {capacity}")
    return filling, flooding, full_collection() - without


async def section(options: Options) -> SectionResult:
    capacity, flood = options.sampler_capacity, options.sampler_flood
    rounds = [one_round(capacity, flood) for _ in range(options.runs)]
    filling = statistics.median(r[0] for r in rounds) * 1e6
    flooding = statistics.median(r[1] for r in rounds) * 1e6
    ratio = statistics.median(r[1] / r[0] for r in rounds)
    pause = statistics.median(r[2] for r in rounds) * 1e3
    print(
        f"capacity {capacity:,} windows, then {flood} x capacity more distinct hits; "
        f"{options.runs} rounds\n"
        f"per hit while filling: {filling:.2f} µs; past capacity: {flooding:.2f} µs; "
        f"ratio {ratio:.2f}\n"
        f"a full garbage collection takes {pause:.1f} ms longer with the Sampler full"
    )
    result = SectionResult("sampler")
    result.rows.append(
        ("sampling, µs per hit: filling / past capacity", f"{filling:.2f} / {flooding:.2f}")
    )
    result.rows.append(("sampling, a full Sampler's cost to a full collection", f"{pause:.1f} ms"))
    result.targets.append(
        Target(
            f"sampling a flood past capacity costs <= {TARGET_RATIO:g} x per hit",
            f"{ratio:.2f} x",
            ratio <= TARGET_RATIO,
        )
    )
    return result
