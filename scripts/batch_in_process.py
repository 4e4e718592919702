"""K runs at once in one process, no HTTP: what the decoding batch itself gives (a script, not a test).

    python scripts/batch_in_process.py --model random:gpt2 --k 1 1 16 16

Each K: K threads start a run each (64 sampled new tokens, seeds 0..K-1, four prompts in turn) on one ONNX backend,
all at once; prints the aggregate new tokens/s (all tokens over the wall time) and time to first token p50/max.
scripts/classroom.py measures the same through the app (logins, /generate and /v1).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPTS = ["The return value of a function is", "A class definition", "Exceptions are raised when", "The module"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:gpt2")
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 1, 16, 16])
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args(argv)

    from playground.backends.onnx import OnnxBackend
    from playground.config import GenerationSettings
    from playground.generation import Generation
    from playground.models import resolve_model

    source = resolve_model(args.model)
    backend = OnnxBackend(source, args.variant, device="cpu", progress=False)
    for k in args.k:
        ttft: dict[int, float] = {}

        def run(i: int) -> None:
            generation = Generation(backend, source, PROMPTS[i % len(PROMPTS)],
                                    GenerationSettings(max_new_tokens=args.new_tokens, seed=i), ignore_eos=True)
            for _ in generation:
                pass
            ttft[i] = generation.result.ttft_ms

        threads = [threading.Thread(target=run, args=(i,)) for i in range(k)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        times = sorted(ttft.values())
        print(f"K={k:>3}: {k * args.new_tokens / seconds:.1f} tokens/s; TTFT p50 {times[len(times) // 2]:.0f} ms, "
              f"max {times[-1]:.0f} ms", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
