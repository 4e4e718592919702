"""Does the head graph's thread pool, left spinning after a run, slow the decoder's next steps? (onnx/runtime.py's HeadRunner)

For each setting of the head session (onnxruntime's default, spinning; or `session.intra_op.allow_spinning` 0), prints the
median time of: the prompt's last-position prefill, scoring the rest with the head graph, and the two decoding steps
after it. Run each setting in its own process, alternated:

    for m in spin nospin spin nospin; do python scripts/head_spin.py $m; done
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["spin", "nospin"])
    parser.add_argument("--model", default="random:gpt2")
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=12)
    args = parser.parse_args()

    import onnxruntime as ort

    from playground.backends.onnx import OnnxBackend
    from playground.models import resolve_model
    from playground.onnx.runtime import HeadRunner, session_options

    backend = OnnxBackend(resolve_model(args.model), args.variant, device="cpu", progress=False, threads=2)
    head = HeadRunner(*backend.runner._head_args)
    if args.mode == "spin":  # onnxruntime's default options, as the head had before
        path, providers, threads = backend.runner._head_args
        head.session = ort.InferenceSession(str(path), session_options(threads), providers=providers)
    backend.runner._head = head
    ids = list(range(1000, 1000 + args.prompt_tokens))
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        _, _, cache, rest = backend.prefill_first([ids], top_k=10)
        t1 = time.perf_counter()
        backend.score_rest(rest)
        t2 = time.perf_counter()
        _, cache = backend.step_batch([5], cache)
        t3 = time.perf_counter()
        backend.step_batch([6], cache)
        t4 = time.perf_counter()
        times.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3))
    medians = [round(1000 * float(np.median([t[i] for t in times[2:]])), 1) for i in range(4)]  # the first two: warm-up
    print(f"{args.mode}: ms (median) prefill of the last position {medians[0]}, head over the rest {medians[1]}, "
          f"the next step {medians[2]}, the step after {medians[3]}")


if __name__ == "__main__":
    main()
