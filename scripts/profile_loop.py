"""Profile the playground's decoding loop on an ONNX variant by CPU time (the clock the machine's load moves least):

    python scripts/profile_loop.py [--variant int8] [--new-tokens 128] [--runs 2] [--lines 22]

Greedy, fixed length, on `random:gpt2`, after a warm-up; prints cProfile's top lines by own time, with
`time.thread_time` as the clock.
"""

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playground.backends.onnx import OnnxBackend  # noqa: E402
from playground.bench.loop import playground_loop  # noqa: E402
from playground.models import resolve_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--lines", type=int, default=22)
    args = parser.parse_args()
    source = resolve_model("random:gpt2")
    backend = OnnxBackend(source, args.variant, "cpu")
    prompt = "The return value of a function is the value of the expression after the return statement. " * 2
    playground_loop(backend, source, prompt, 8)  # warm-up
    profile = cProfile.Profile(time.thread_time)
    profile.enable()
    for _ in range(args.runs):
        playground_loop(backend, source, prompt, args.new_tokens)
    profile.disable()
    pstats.Stats(profile).sort_stats("tottime").print_stats(args.lines)


if __name__ == "__main__":
    main()
