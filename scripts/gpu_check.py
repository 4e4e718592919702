"""GPU readiness check: on a machine with a CUDA GPU, run the CUDA checks and benchmark cells and write a report.

    python scripts/gpu_check.py [--model random:gpt2] [--out gpu-report] [--new-tokens 128] [--repeats 3]

What it does where a GPU is usable:
1. the test files that touch CUDA paths (ONNX io binding, batching, the benchmark) with pytest;
2. batch parity on CUDA: sample i of a batch of 4 equals a run of one with seed + i (PyTorch fp16, ONNX fp16),
   token for token;
3. the benchmark cells PyTorch fp16, ONNX fp32 / fp16 / int4 on CUDA (IO binding keeps the cache on the GPU),
   at batch 1 and 8, with the bar "ONNX fp16 at batch 1 >= 2x PyTorch eager fp16 tokens/s";
and writes `report.md` and `report.json` under --out. Where no GPU is usable it says why and exits 0.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CUDA_TEST_FILES = ["tests/test_onnx.py", "tests/test_batch.py", "tests/test_batching.py", "tests/test_bench.py"]
GPU_CELLS = "torch:fp16:cuda,onnx:fp32:cuda,onnx:fp16:cuda,onnx:int4:cuda"
GPU_BAR = 2.0  # ONNX fp16 at batch 1 against PyTorch eager fp16, decode tokens/s


def gpu_status() -> tuple[bool, str]:
    """(usable, what was found): both torch and onnxruntime must see CUDA."""
    import torch

    from playground.onnx.runtime import cuda_provider_available

    if not torch.cuda.is_available():
        return False, "torch.cuda.is_available() is False"
    if not cuda_provider_available():
        return False, f"torch sees {torch.cuda.get_device_name(0)}, but onnxruntime lists no CUDAExecutionProvider"
    return True, torch.cuda.get_device_name(0)


def run_tests(out: Path) -> dict:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *CUDA_TEST_FILES], cwd=ROOT,
                          capture_output=True, text=True)
    (out / "pytest.txt").write_text(proc.stdout + proc.stderr)
    return {"files": CUDA_TEST_FILES, "returncode": proc.returncode, "summary": (proc.stdout.strip().splitlines() or [""])[-1],
            "seconds": round(time.perf_counter() - started, 1)}


def batch_parity(source, exports_root: Path | None) -> list[dict]:
    """Sample i of a batch of 4 vs a run of one with seed + i, on the CUDA backends."""
    from playground.backends.onnx import OnnxBackend
    from playground.backends.torch import TorchBackend
    from playground.config import GenerationSettings
    from playground.generation import generate, generate_samples

    prompt = "The return value of a function is"
    settings = GenerationSettings(max_new_tokens=24, seed=100, temperature=1.0, top_k=50)
    checks = []
    for name, make in (("torch fp16", lambda: TorchBackend(source, "cuda")),
                       ("onnx fp16", lambda: OnnxBackend(source, "fp16", "cuda", exports_root=exports_root))):
        backend = make()
        batch = generate_samples(backend, source, prompt, settings, num_samples=4)
        same, max_diff = 0, 0.0
        for i, result in enumerate(batch):
            alone = generate(backend, source, prompt, GenerationSettings(max_new_tokens=24, seed=100 + i, top_k=50))
            if [t.token_id for t in result.tokens] == [t.token_id for t in alone.tokens]:
                same += 1
                max_diff = max([max_diff] + [abs(a.raw_prob - b.raw_prob) for a, b in zip(result.tokens, alone.tokens)])
        checks.append({"backend": name, "provider": backend.info.provider, "samples_equal": f"{same}/4",
                       "max_prob_diff": max_diff})
    return checks


def continuous_batching_parity(source, exports_root: Path | None) -> list[dict]:
    """Runs of prompts of different lengths decoding at once (continuous batching: padded rows, masked; joining and
    leaving mid-way) vs each run alone, on the CUDA backends. Unchecked on a GPU until a GPU runs this: the padded
    rows go through the CUDA attention kernels' key padding mask."""
    import threading

    from playground.backends.onnx import OnnxBackend
    from playground.backends.torch import TorchBackend
    from playground.config import GenerationSettings
    from playground.generation import Generation, generate

    jobs = [("The return value of a function is", 30, 1), ("A", 12, 2), ("Exceptions are raised when the", 20, 3),
            ("In the beginning of the module there was a class that", 8, 4)]
    checks = []
    for name, make in (("torch fp16", lambda: TorchBackend(source, "cuda")),
                       ("onnx fp32", lambda: OnnxBackend(source, "fp32", "cuda", exports_root=exports_root)),
                       ("onnx fp16", lambda: OnnxBackend(source, "fp16", "cuda", exports_root=exports_root)),
                       # int4 keeps an int8 cache on the CPU; on CUDA it is loaded with the fp32 one (onnx/runtime.py
                       # `decoder_session`): this is where that graph decodes batches on a GPU.
                       ("onnx int4", lambda: OnnxBackend(source, "int4", "cuda", exports_root=exports_root))):
        backend = make()
        alone = [generate(backend, source, prompt, GenerationSettings(max_new_tokens=n, seed=seed, top_k=50))
                 for prompt, n, seed in jobs]
        together, errors = [None] * len(jobs), []

        def one(i: int) -> None:
            prompt, n, seed = jobs[i]
            try:
                run = Generation(backend, source, prompt, GenerationSettings(max_new_tokens=n, seed=seed, top_k=50))
                list(run)
                together[i] = run.result
            except Exception as exc:  # noqa: BLE001 - reported
                errors.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(jobs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        same = sum(1 for a, b in zip(together, alone) if a is not None and [t.token_id for t in a.tokens] == [t.token_id for t in b.tokens])
        checks.append({"backend": name, "provider": backend.info.provider, "runs_equal": f"{same}/{len(jobs)}",
                       "errors": errors[:3]})
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:gpt2")
    parser.add_argument("--out", type=Path, default=Path("gpu-report"))
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--exports", type=Path, default=None, help="exports folder (default: the app's)")
    parser.add_argument("--skip-tests", action="store_true")
    args = parser.parse_args(argv)

    usable, found = gpu_status()
    if not usable:
        print(f"No usable CUDA GPU on this machine ({found}): nothing to check. Run this script where a GPU is lent.")
        return 0

    from playground.bench.engine import BenchConfig, markdown_table, parse_cells, run_benchmark
    from playground.machine import machine_description
    from playground.models import resolve_model

    args.out.mkdir(parents=True, exist_ok=True)
    print(f"GPU: {found}", file=sys.stderr)
    report: dict = {"gpu": found, "machine": machine_description()}
    if not args.skip_tests:
        report["tests"] = run_tests(args.out)
        print(f"tests: {report['tests']['summary']}", file=sys.stderr)
    source = resolve_model(args.model)
    report["batch_parity"] = batch_parity(source, args.exports)
    report["continuous_batching"] = continuous_batching_parity(source, args.exports)
    config = BenchConfig([args.prompt_tokens], [args.new_tokens], args.repeats, batch_sizes=[1, 8])
    rows = run_benchmark(source, parse_cells(GPU_CELLS), config, exports_root=args.exports)
    report["rows"] = rows
    speed = {(r["backend"], r["variant"], r["batch"]): r["decode_tokens_per_s"] for r in rows}
    onnx_fp16, torch_fp16 = speed.get(("onnx", "fp16", 1)), speed.get(("torch", "fp16", 1))
    ratio = onnx_fp16 / torch_fp16 if onnx_fp16 and torch_fp16 else None
    report["bar"] = {"onnx_fp16_over_torch_fp16_batch_1": ratio, "needed": GPU_BAR, "met": bool(ratio and ratio >= GPU_BAR)}

    (args.out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    lines = [f"# GPU check: {found}", "", f"Model {source.name}, {args.prompt_tokens} prompt + {args.new_tokens} new tokens, "
             f"{args.repeats} repeats, greedy.", ""]
    if "tests" in report:
        lines += [f"Tests ({', '.join(CUDA_TEST_FILES)}): {report['tests']['summary']} (exit {report['tests']['returncode']})", ""]
    lines += ["## Continuous batching on CUDA (runs of different prompts at once vs each alone)", "",
              "| backend | provider | runs equal | errors |", "|---|---|---|---|"]
    lines += [f"| {c['backend']} | {c['provider']} | {c['runs_equal']} | {'; '.join(c['errors']) or '-'} |"
              for c in report["continuous_batching"]]
    lines += ["", "## Batch parity on CUDA (sample i of 4 vs a run of one with seed + i)", "",
              "| backend | provider | samples equal | max prob diff |", "|---|---|---|---|"]
    lines += [f"| {c['backend']} | {c['provider']} | {c['samples_equal']} | {c['max_prob_diff']:.2e} |" for c in report["batch_parity"]]
    lines += ["", "## Benchmark", "", markdown_table(rows), "",
              f"Bar: ONNX fp16 / PyTorch fp16 at batch 1 = {ratio:.2f}x (needed {GPU_BAR}x): {'met' if report['bar']['met'] else 'NOT met'}"
              if ratio else "Bar: not measured (a cell is missing)."]
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if report.get("tests", {}).get("returncode", 0) == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
