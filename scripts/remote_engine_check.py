"""Drive a real serving engine (llama.cpp's, through llama-cpp-python's server) with the remote backend, and report figures.

What it does:
1. converts the model (default models/demo-gpt2) to GGUF with llama.cpp's own converter,
   `convert_hf_to_gguf.py`, from a llama.cpp source tree (the llama-cpp-python sdist holds one in
   vendor/llama.cpp; `pip download llama-cpp-python --no-binary :all: --no-deps` fetches it);
2. starts `python -m llama_cpp.server` from a separate venv on loopback (its build of llama.cpp);
3. runs the same greedy prompts through the playground's remote backend and through local PyTorch,
   and prints tokens/s of each and how often the engine's top-1 token is local PyTorch's top-1 given
   the same prefix (teacher-forced), with the largest gap between the two probabilities of a token.

    python scripts/remote_engine_check.py --llama-python /work/llama-venv/bin/python \\
        --llama-src /path/to/llama_cpp_python-0.3.36/vendor/llama.cpp

`--engine-url URL` measures an engine that is already running instead (steps 1-2 skipped).
The conversion is the benchmark's (`playground.bench.peers.convert_to_gguf`), with its two run-time adjustments on a
copy of the model: config.json gains `n_ctx` (the converter reads it; transformers no longer writes it), and the
converter is told that the tokenizer's pre-tokenizer is GPT-2's (it only recognises known vocabularies by a hash;
tokenizer.json is checked to declare GPT-2's ByteLevel pre-tokenizer with its regex first).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPTS = [
    "The return value of a function is",
    "A list is a mutable sequence",
    "When the interpreter starts,",
    "Exceptions are raised when",
]

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_llama_server(python: str, gguf: Path, context: int, threads: int) -> tuple[subprocess.Popen, str]:
    """llama-cpp-python's OpenAI-compatible server on loopback; logits_all so that it can return logprobs."""
    import httpx

    port = free_port()
    log = open(gguf.with_suffix(".server.log"), "w")
    server = subprocess.Popen([python, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                               "--port", str(port), "--n_ctx", str(context), "--logits_all", "true",
                               "--n_threads", str(threads), "--model_alias", "demo-gpt2"], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(600):
        if server.poll() is not None:
            raise SystemExit(f"llama_cpp.server exited ({server.returncode}); see {log.name}")
        try:
            if httpx.get(url + "/models", timeout=1).status_code == 200:
                return server, url
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"llama_cpp.server did not answer within 2 minutes; see {log.name}")


def teacher_forced(local_backend, result) -> tuple[int, int, float]:
    """(positions where local PyTorch's argmax is the engine's token given the engine's prefix, positions, the
    largest |p_engine - p_local| of an engine token)."""
    import torch

    prompt_ids = [t.token_id for t in result.prompt_tokens]
    ids = prompt_ids + [t.token_id for t in result.tokens]
    logits, _ = local_backend.prefill(ids)  # (T, V)
    probs = torch.softmax(logits, dim=-1)  # (T, V)
    agree, gap = 0, 0.0
    for j, record in enumerate(result.tokens):
        row = probs[len(prompt_ids) + j - 1]  # the distribution that predicts output token j
        agree += int(int(row.argmax()) == record.token_id)
        if record.raw_prob is not None:
            gap = max(gap, abs(record.raw_prob - float(row[record.token_id])))
    return agree, len(result.tokens), gap


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="models/demo-gpt2")
    parser.add_argument("--llama-python", help="python of a venv with llama-cpp-python[server] (not the project's venv)")
    parser.add_argument("--llama-src", help="a llama.cpp source tree holding convert_hf_to_gguf.py")
    parser.add_argument("--engine-url", help="measure an engine already running at this URL instead")
    parser.add_argument("--engine-model", help="the engine's name for the model (default: the first it lists)")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (default 1; the machine is shared)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from playground.bench.peers import convert_to_gguf
    from playground.config import GenerationSettings
    from playground.errors import PlaygroundError
    from playground.models import resolve_model
    from playground.service import Playground

    source = resolve_model(args.model)
    server = None
    try:
        if args.engine_url:
            url = args.engine_url
        else:
            if not (args.llama_python and args.llama_src):
                raise SystemExit("give --engine-url, or --llama-python and --llama-src to start llama.cpp's server")
            work = Path(tempfile.mkdtemp(prefix="remote-engine-check-"))
            gguf = work / f"{source.name}-f32.gguf"
            started = time.perf_counter()
            try:  # f32, so the comparison measures the engine, not a quantization
                convert_to_gguf(Path(source.location).resolve(), Path(args.llama_src), gguf)
            except PlaygroundError as exc:
                raise SystemExit(str(exc)) from None
            print(f"converted {source.location} -> {gguf} ({gguf.stat().st_size / 2**20:.1f} MB) in "
                  f"{time.perf_counter() - started:.1f} s", flush=True)
            from transformers import AutoConfig

            server, url = start_llama_server(args.llama_python, gguf, AutoConfig.from_pretrained(source.location).n_positions,
                                             args.threads)
            print(f"llama_cpp.server on {url}", flush=True)
        playground = Playground(source, device="cpu", remote_url=url, remote_model=args.engine_model)
        remote = playground.backend("remote")
        # llama-cpp-python's own defaults would change a greedy run: repeat_penalty 1.1, min_p 0.05.
        remote.extra_body = {"repeat_penalty": 1.0, "min_p": 0.0}
        local = playground.backend("torch")
        settings = GenerationSettings(max_new_tokens=args.tokens, do_sample=False, top_alternatives=5, seed=0)

        def run(backend: str, prompt: str):
            generation = playground.start(prompt, settings, backend=backend)
            started = time.perf_counter()
            for _ in generation:
                pass
            return generation.result, time.perf_counter() - started

        run("remote", PROMPTS[0]), run("torch", PROMPTS[0])  # warm-up
        rows, totals = [], {"remote": [0, 0.0], "torch": [0, 0.0]}
        agree_all = positions_all = 0
        worst_gap = 0.0
        same_text = 0
        for prompt in PROMPTS:
            results = {}
            for backend in ("torch", "remote"):
                result, seconds = run(backend, prompt)
                results[backend] = result
                totals[backend][0] += len(result.tokens)
                totals[backend][1] += seconds
            agree, positions, gap = teacher_forced(local, results["remote"])
            agree_all, positions_all, worst_gap = agree_all + agree, positions_all + positions, max(worst_gap, gap)
            echoed = sum(t.raw_prob is not None for t in results["remote"].prompt_tokens)
            alternatives = min(len(t.top) for t in results["remote"].tokens)
            same = results["remote"].text == results["torch"].text
            same_text += same
            rows.append((prompt, len(results["remote"].tokens), agree, positions, gap, same, echoed, alternatives))
        print()
        print(f"engine: {remote.info.label()}   local: {local.info.label()}   {args.tokens} new tokens, greedy")
        print("| prompt | tokens | top-1 agreement (teacher-forced) | max abs p gap | same text as PyTorch | prompt tokens "
              "scored by the engine | alternatives per token |")
        print("|---|---|---|---|---|---|---|")
        for prompt, n, agree, positions, gap, same, echoed, alternatives in rows:
            print(f"| {prompt} | {n} | {agree}/{positions} | {gap:.2e} | {'yes' if same else 'no'} | {echoed} | {alternatives} |")
        print()
        for backend in ("torch", "remote"):
            n, seconds = totals[backend]
            print(f"{backend:>6}: {n} tokens in {seconds:.2f} s = {n / seconds:.1f} tokens/s (whole runs, prompt included)")
        print(f"top-1 agreement: {agree_all}/{positions_all} = {agree_all / max(positions_all, 1):.1%}; "
              f"largest |p_engine - p_torch| {worst_gap:.2e}; same text on {same_text}/{len(PROMPTS)} prompts")
        print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
