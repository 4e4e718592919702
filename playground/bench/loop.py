"""Does the playground's decoding loop cost throughput? It vs a bare `InferenceSession.run` loop, same session.

    python -m playground.bench.loop --model random:gpt2 --variant int8 --new-tokens 64

Both loops decode greedily for a fixed number of tokens (no early stop) on one shared session. The
bare loop does only what any caller must (feed, run, argmax); the playground's loop also applies
the logits processors and records probability, rank, entropy and top-10 alternatives per token.
Warm-up first, then repeats alternating between the two. This machine's speed drifts by 10-20%
between seconds, so the ratio is the median of per-pair ratios (each pair runs back to back), not
a ratio of medians.

On a machine shared with other work the wall-clock ratio swings widely; the main thread's CPU time
spent outside `session.run` per token (`*_outside_run_cpu_us`) does not depend on the load much, so
it is reported too: the playground loop's extra over the bare loop is its whole overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

from ..config import GenerationSettings
from ..generation import generate


class CountingSession:
    """The runner's session with the main thread's CPU time inside `run` (or `run_with_iobinding`) added up
    (everything else delegated)."""

    def __init__(self, session):
        self._session = session
        self.inside_s = 0.0
        self.calls = 0

    def _counted(self, method, *args, **kwargs):
        started = time.thread_time()
        try:
            return method(*args, **kwargs)
        finally:
            self.inside_s += time.thread_time() - started
            self.calls += 1

    def run(self, *args, **kwargs):
        return self._counted(self._session.run, *args, **kwargs)

    def run_with_iobinding(self, *args, **kwargs):
        return self._counted(self._session.run_with_iobinding, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._session, name)


def outside_run_cpu_us(runner, loop, new_tokens: int) -> tuple[float, float]:
    """Main-thread CPU microseconds per decoded token spent (outside, inside) `session.run` by `loop()` (prefill
    excluded: a one-token run is subtracted)."""
    session = runner.session
    counting = runner.session = CountingSession(session)
    try:
        def cpu(tokens: int) -> tuple[float, float]:
            counting.inside_s = 0.0
            started = time.thread_time()
            loop(tokens)
            return time.thread_time() - started - counting.inside_s, counting.inside_s

        (out_n, in_n), (out_1, in_1) = cpu(new_tokens), cpu(1)
        return (out_n - out_1) / (new_tokens - 1) * 1e6, (in_n - in_1) / (new_tokens - 1) * 1e6
    finally:
        runner.session = session


def bare_loop(runner, prompt_ids: list[int], new_tokens: int) -> float:
    """Decode tokens/s of the minimal loop: session.run, keep the cache, argmax. For an export that writes its cache
    in place, the runner's own step (IO binding to the cache buffers, the logits as a tensor view) is that minimum,
    fetching only the logits and the cache: not the statistics the graph can compute (onnx/stats.py), which are
    the playground loop's work."""
    if runner.in_place:
        fetches = runner.computes_statistics
        runner.computes_statistics = False
        try:
            logits, cache = runner.prefill(prompt_ids)
            token = int(logits[-1].argmax())
            started = time.perf_counter()
            for _ in range(new_tokens - 1):
                logits, cache = runner.step_batch([token], cache)
                token = int(logits[0].argmax())
            return (new_tokens - 1) / (time.perf_counter() - started)
        finally:
            runner.computes_statistics = fetches
    session, names = runner.session, runner.output_names
    past = runner._empty_past()
    feed = runner._feed(prompt_ids, 0) | dict(zip(runner.past_names, past))
    logits, *past = session.run(names, feed)
    token, n = int(logits[0, -1].argmax()), len(prompt_ids)
    started = time.perf_counter()
    for _ in range(new_tokens - 1):
        feed = {
            "input_ids": np.array([[token]], dtype=np.int64),
            "attention_mask": np.ones((1, n + 1), dtype=np.int64),
            "position_ids": np.array([[n]], dtype=np.int64),
        }
        feed.update(zip(runner.past_names, past))
        logits, *past = session.run(names, feed)
        token, n = int(logits[0, -1].argmax()), n + 1
    return (new_tokens - 1) / (time.perf_counter() - started)


def playground_loop(backend, source, prompt: str, new_tokens: int) -> float:
    settings = GenerationSettings(max_new_tokens=new_tokens, do_sample=False, top_alternatives=10)
    result = generate(backend, source, prompt, settings, ignore_eos=True)
    assert len(result.tokens) == new_tokens
    return result.decode_tokens_per_s


def main(argv: list[str] | None = None) -> int:
    from tqdm.auto import tqdm

    from ..backends.onnx import OnnxBackend
    from ..models import resolve_model

    parser = argparse.ArgumentParser(prog="python -m playground.bench.loop", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:gpt2")
    parser.add_argument("--variant", default="int8", choices=["fp32", "int8", "int4", "fp16"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all cores)")
    args = parser.parse_args(argv)

    source = resolve_model(args.model)
    backend = OnnxBackend(source, args.variant, args.device, threads=args.threads)
    # A prompt of exactly --prompt-tokens tokens: documentation text, tokenized and cut.
    words = ("The return value of a function is the value of the expression after the return statement. " * 20)
    prompt_ids = source.tokenizer(words)["input_ids"][: args.prompt_tokens]
    prompt = source.tokenizer.decode(prompt_ids)
    prompt_ids = source.tokenizer(prompt)["input_ids"]

    bare_loop(backend.runner, prompt_ids, 8)  # warm-up: session arenas, caches
    playground_loop(backend, source, prompt, 8)
    bare, ours = [], []
    for _ in tqdm(range(args.repeats), desc="bench_loop", unit="repeat"):
        bare.append(bare_loop(backend.runner, prompt_ids, args.new_tokens))
        ours.append(playground_loop(backend, source, prompt, args.new_tokens))
    row = {
        "model": source.name,
        "variant": args.variant,
        "provider": backend.info.provider,
        "threads": backend.runner.session.get_session_options().intra_op_num_threads,
        "cpu_count": os.cpu_count(),
        "prompt_tokens": len(prompt_ids),
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "bare_tokens_per_s": round(statistics.median(bare), 1),
        "playground_tokens_per_s": round(statistics.median(ours), 1),
    }
    row["ratio"] = round(statistics.median(o / b for o, b in zip(ours, bare)), 3)
    row["ratio_min_max"] = [round(min(o / b for o, b in zip(ours, bare)), 3), round(max(o / b for o, b in zip(ours, bare)), 3)]
    bare_cpu = [outside_run_cpu_us(backend.runner, lambda n: bare_loop(backend.runner, prompt_ids, n), args.new_tokens) for _ in range(3)]
    ours_cpu = [outside_run_cpu_us(backend.runner, lambda n: playground_loop(backend, source, prompt, n), args.new_tokens)
                for _ in range(3)]
    row["bare_outside_run_cpu_us"] = round(statistics.median(o for o, _ in bare_cpu), 1)
    row["playground_outside_run_cpu_us"] = round(statistics.median(o for o, _ in ours_cpu), 1)
    row["bare_inside_run_cpu_us"] = round(statistics.median(i for _, i in bare_cpu), 1)
    # The overhead as a share of a step: the ratio the loop would reach if nothing else ran (the main thread's CPU
    # time inside run stands for the step, as it computes through the whole step).
    step_us = row["bare_inside_run_cpu_us"]
    row["overhead_us_per_token"] = round(row["playground_outside_run_cpu_us"] - row["bare_outside_run_cpu_us"], 1)
    row["ratio_from_cpu_time"] = round(step_us / (step_us + row["overhead_us_per_token"]), 3)
    print(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
