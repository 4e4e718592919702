"""What a call costs right after a decoding step, against the same call repeated at once:

    python scripts/cold_calls.py [--variant int4] [--steps 100]

A step streams the model's weights through the CPU caches; the per-token statistics that follow it
start cold. For each call below, `--steps` real decoding steps of `random:gpt2`, each followed by the
call twice, timed with `time.thread_time` (microseconds per call).
"""

import argparse
import collections
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from playground.backends.onnx import OnnxBackend  # noqa: E402
from playground.generation import top_k  # noqa: E402
from playground.models import resolve_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="int4")
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    runner = OnnxBackend(resolve_model("random:gpt2"), args.variant, "cpu").runner
    first, _ = runner.prefill([1000])
    scratch = np.empty_like(first.numpy()[-1])  # (V,) work buffer, as the loop keeps one
    calls = {
        "x.max() over the logits": lambda x: x.max(),
        "shift + exp into a work buffer": lambda x: np.exp(np.subtract(x, x[0], out=scratch), out=scratch),
        "the top-10 (top_k)": lambda x: top_k(x[None], 10),
        "a no-op math.exp(1.0)": lambda x: math.exp(1.0),
    }
    cost = collections.defaultdict(lambda: [0.0, 0.0])
    for name, call in calls.items():
        _, cache = runner.prefill(list(range(1000, 1032)))
        for _ in range(args.steps):
            logits, cache = runner.step(5, cache)
            x = logits.numpy()  # (V,)
            for i in range(2):
                started = time.thread_time()
                call(x)
                cost[name][i] += time.thread_time() - started
    print(f"| after a step ({args.variant}) | first call | same call again |\n|---|---|---|")
    for name, (first, again) in cost.items():
        print(f"| {name} | {first / args.steps * 1e6:.0f} us | {again / args.steps * 1e6:.0f} us |")


if __name__ == "__main__":
    main()
