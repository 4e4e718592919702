"""What this machine is (CPU, cores, GPU, Python, library versions), for the reports of benchmarks and fine-tunes,
and how many of its cores torch should use right now."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version


def machine_description() -> dict:
    import torch

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {name: version(name) for name in ("torch", "transformers", "onnxruntime-gpu", "optimum-onnx")},
    }


def idle_cores(window_s: float = 0.2) -> float:
    """How many cores the other processes leave free now: the machine's busy CPU time over a short window, less this
    process's own, in cores. psutil reads both; the subtraction is ours (psutil has no "busy except me")."""
    import psutil

    def busy(times) -> float:  # guest time is already counted in user time on Linux
        return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal"))

    me = psutil.Process()
    started, machine, mine = time.monotonic(), busy(psutil.cpu_times()), sum(me.cpu_times()[:2])
    time.sleep(window_s)
    elapsed = time.monotonic() - started
    others = max(0.0, (busy(psutil.cpu_times()) - machine) - (sum(me.cpu_times()[:2]) - mine)) / elapsed
    return max(0.0, (psutil.cpu_count() or 1) - others)


def training_threads() -> int:
    """torch threads for a training run: one per core that other processes leave free, at least one, at most torch's
    own count. torch's threads wait for each other at every operation, so one that shares its core with another
    process holds up the rest: building the demo model for 60 steps on 2 cores took 50.5 s with 2 threads and 16.8 s
    with 1 while another process kept a core busy, and 11.4 s against 16.9 s when the machine was idle
    (2026-12-05, `python -c "while True: pass"` beside `build_demo_model(DemoRecipe(steps=60))`)."""
    import torch

    return max(1, min(torch.get_num_threads(), round(idle_cores())))


def batch_rows(cores: int | None = None) -> int:
    """How many rows (samples of all the runs at once) the decoding batch steps together: 8 per core, from 16 to 64.

    A decoding step reads every weight once whatever its rows, so rows are nearly free until the arithmetic catches up
    with the reading; past that point more rows only slow each one down, and a run that waits for a place is better
    off than sixteen that all crawl. The benchmark's batch table (docs/benchmark.md#batches: `python -m playground.bench
    --model random:gpt2 --batch-sizes 1 4 8 16`, 2 cores) puts that point at 8 to 16 rows on 2 cores: ONNX int8
    4.08x the tokens/s of one row at 8 and 4.14x at 16, int4 2.85x and 3.08x, fp32 5.79x and 8.45x. 16 rows there let
    a class of 16 start at once at about the same total; cores add arithmetic, so a bigger machine takes more rows."""
    cores = cores or os.cpu_count() or 1
    return max(16, min(64, 8 * cores))


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run a block with `count` torch intra-op threads (None: leave as is), restoring the previous count."""
    if count is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
