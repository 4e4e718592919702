"""What beam search costs: time per generated token of a beam search run against a greedy run, same backend.

    python -m playground.bench.beams --model random:gpt2 --variant int8 --beams 4 --new-tokens 32

Both runs go through the one decoding loop to exactly --new-tokens tokens (end of text ignored, so the beams run to the
end). The B beams are B rows of one batch: a step costs one forward pass of B rows, the beam step (log-softmax, top 2B of
B x V, records of the 2B continuations) and the reordering of the rows' cache. Warm-up first, then repeats alternating
between the two; the ratio is the median of per-pair ratios (each pair back to back), as bench/loop.py does, so that a
machine whose speed drifts (or is shared) still gives a fair ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from ..config import GenerationSettings
from ..generation import Generation


class TimedSession:
    """The runner's session with the wall time inside its runs added up (everything else delegated): what is left of a
    run's time is the loop's own work (choosing, records, the beams' bookkeeping and cache reordering)."""

    def __init__(self, session):
        self._session, self.inside_s = session, 0.0

    def run_with_iobinding(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return self._session.run_with_iobinding(*args, **kwargs)
        finally:
            self.inside_s += time.perf_counter() - started

    def __getattr__(self, name):
        return getattr(self._session, name)


def ms_per_token(backend, source, prompt: str, new_tokens: int, beams: int) -> tuple[float, float, float]:
    """(wall milliseconds per generated token, prefill included; decode milliseconds per token after the first; of the
    wall time per token, milliseconds outside the session's runs)."""
    settings = GenerationSettings(max_new_tokens=new_tokens, do_sample=False, num_beams=beams, top_alternatives=10)
    run = Generation(backend, source, prompt, settings, ignore_eos=True)
    session = backend.runner.session = TimedSession(backend.runner.session)
    try:
        started = time.perf_counter()
        for _ in run.samples():
            pass
        wall_ms = (time.perf_counter() - started) * 1000
    finally:
        backend.runner.session = session._session
    result = run.result
    assert len(result.tokens) == new_tokens
    return wall_ms / new_tokens, result.decode_ms / (new_tokens - 1), (wall_ms - session.inside_s * 1000) / new_tokens


def main(argv: list[str] | None = None) -> int:
    from tqdm.auto import tqdm

    from ..backends.onnx import OnnxBackend
    from ..machine import machine_description
    from ..models import resolve_model

    parser = argparse.ArgumentParser(prog="python -m playground.bench.beams", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:gpt2")
    parser.add_argument("--variant", default="int8", choices=["fp32", "int8", "int4", "fp16"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all cores)")
    args = parser.parse_args(argv)

    source = resolve_model(args.model)
    backend = OnnxBackend(source, args.variant, args.device, threads=args.threads)
    words = ("The return value of a function is the value of the expression after the return statement. " * 20)
    prompt = source.tokenizer.decode(source.tokenizer(words)["input_ids"][: args.prompt_tokens])

    ms_per_token(backend, source, prompt, 8, 1)  # warm-up: session arenas, the cache's slots
    ms_per_token(backend, source, prompt, 8, args.beams)
    greedy, beam = [], []
    for _ in tqdm(range(args.repeats), desc="bench_beams", unit="repeat"):
        greedy.append(ms_per_token(backend, source, prompt, args.new_tokens, 1))
        beam.append(ms_per_token(backend, source, prompt, args.new_tokens, args.beams))
    row = {
        "model": source.name, "variant": args.variant, "provider": backend.info.provider, "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2), "beams": args.beams, "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens, "repeats": args.repeats,
        "greedy_ms_per_token": round(statistics.median(g[0] for g in greedy), 2),
        "beam_ms_per_token": round(statistics.median(b[0] for b in beam), 2),
        "greedy_decode_ms_per_token": round(statistics.median(g[1] for g in greedy), 2),
        "beam_decode_ms_per_token": round(statistics.median(b[1] for b in beam), 2),
        "greedy_outside_run_ms_per_token": round(statistics.median(g for _, _, g in greedy), 2),
        "beam_outside_run_ms_per_token": round(statistics.median(b for _, _, b in beam), 2),
        "ratio": round(statistics.median(b[0] / g[0] for g, b in zip(greedy, beam)), 3),
        "decode_ratio": round(statistics.median(b[1] / g[1] for g, b in zip(greedy, beam)), 3),
        "machine": machine_description(),
    }
    print(json.dumps(row, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
