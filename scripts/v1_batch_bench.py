"""Measure `/v1/completions` with n > 1: the n samples as one batch vs one run after another (a script, not a test).

    python scripts/v1_batch_bench.py                          # n=8, 64 tokens, onnx int8 on random:gpt2
    python scripts/v1_batch_bench.py --n 4 --variant int4 --repeats 5

One Playground, two `/v1` apps over it in this process, each served by uvicorn on a loopback port: the
app as shipped (`build_openai_app(playground)`: a prompt's n samples are one batch of the decoding loop)
and the same routes with `batched=False` (n single-sample runs one after another, the remote backend's
way and the route's way before the batch). Requests go through the real `openai` SDK, non-streamed,
alternating between the two after one warm-up each, so that the machine's load falls on both alike;
the medians are printed with the load average before and after. Sample i uses seed S + i on both
paths: the script also reports whether their texts agree (int8 is not batch-invariant, see
tests/test_batch.py, so a token may differ where two alternatives are nearly tied).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "The return value of a function is"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(app) -> str:
    """Serve an ASGI app on a free loopback port in a daemon thread; returns its /v1 base URL once it answers."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}/v1"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:gpt2")
    parser.add_argument("--backend", default="onnx", choices=("torch", "onnx"))
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--exports", type=Path, default=None, help="export folder (default: the app's, exports/)")
    args = parser.parse_args(argv)

    import openai

    from playground.api.routes import build_openai_app
    from playground.models import resolve_model
    from playground.service import Playground

    playground = Playground(resolve_model(args.model), device="cpu", default_backend=args.backend,
                            default_variant=args.variant, exports_root=args.exports)
    playground.backend()  # export and load before timing
    paths = {"batched": serve(build_openai_app(playground)), "one after another": serve(build_openai_app(playground, batched=False))}
    clients = {name: openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600) for name, url in paths.items()}
    request = dict(model=playground.source.name, prompt=PROMPT, n=args.n, max_tokens=args.max_tokens, temperature=1.0,
                   seed=1234, extra_body={"top_k": 0})

    def ask(name: str):
        started = time.perf_counter()
        reply = clients[name].completions.create(**request)
        return time.perf_counter() - started, reply

    load_before = os.getloadavg()
    texts = {name: [c.text for c in ask(name)[1].choices] for name in clients}  # warm-up, and the two paths' texts
    seconds: dict[str, list[float]] = {name: [] for name in clients}
    tokens: dict[str, int] = {}
    for _ in range(args.repeats):
        for name in clients:
            elapsed, reply = ask(name)
            seconds[name].append(elapsed)
            tokens[name] = reply.usage.completion_tokens
    load_after = os.getloadavg()

    print(f"{args.model} {args.backend} {args.variant}, n={args.n}, max_tokens={args.max_tokens}, "
          f"{args.repeats} repeats alternating, load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    for name in clients:
        median = statistics.median(seconds[name])
        print(f"  {name:>17}: median {median:6.2f} s  ({', '.join(f'{s:.2f}' for s in seconds[name])}), "
              f"{tokens[name]} tokens, {tokens[name] / median:6.1f} tokens/s")
    ratio = statistics.median(seconds["one after another"]) / statistics.median(seconds["batched"])
    same = sum(a == b for a, b in zip(texts["batched"], texts["one after another"]))
    print(f"  speed-up {ratio:.2f}x; samples with the same text on both paths: {same}/{args.n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
