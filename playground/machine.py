"""What this machine is (CPU, cores, GPU, Python, library versions), for the reports of benchmarks and fine-tunes."""

from __future__ import annotations

import os
import platform
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
