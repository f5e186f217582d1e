"""GPU timing with CUDA events: warm-up, then the median of per-call event timings.

Method (see bench notes in kernels_check/README section): warm-up calls first so module load, JIT and
handle creation stay out; each timed call is bracketed by its own pair of events; the median is taken.
"""

from __future__ import annotations

import statistics
from typing import Any, Callable


def time_cuda(torch: Any, fn: Callable[[], Any], warmup: int = 3, repeats: int = 15) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    for s, e in zip(starts, ends):
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    ms = sorted(s.elapsed_time(e) for s, e in zip(starts, ends))
    return {"median_ms": statistics.median(ms), "min_ms": ms[0], "max_ms": ms[-1], "repeats": repeats}


def tflops(m: int, n: int, k: int, ms: float) -> float:
    return 2.0 * m * n * k / (ms * 1e-3) / 1e12
