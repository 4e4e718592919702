"""Measure the fine-tuning bars of issue 13 (a script, not a timed test: the figures depend on the machine).

    python scripts/finetune_bench.py            # both parts; about 10 minutes on 2 CPU cores
    python scripts/finetune_bench.py --part adapt
    python scripts/finetune_bench.py --part speed --steps 8

Part "adapt": the demo model (models/demo-gpt2, English Python documentation) fine-tuned on Debian's
GPL-3 text (/usr/share/common-licenses/GPL-3, shipped by base-files on every Debian and Ubuntu: legal
English, a register the demo model never saw), full and LoRA. Bar: validation perplexity on the
held-out tenth of the text drops by at least 50% within 3 minutes (load, training, validation and
saving all counted).

Part "speed": the GPT-2-small shape with random weights (random:gpt2, 124 M parameters), block 128,
batch 4: seconds per optimizer step (median after one warm-up step, validation excluded) and the
process's peak resident memory, full vs LoRA, on the CPU (and on CUDA when there is one).

Each case runs in a fresh child process, so that its peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GPL3 = Path("/usr/share/common-licenses/GPL-3")
ADAPT_CASES = {  # chosen to finish well inside 3 minutes on 2 busy cores
    "full": dict(method="full", learning_rate=1e-3, max_steps=60, batch_size=8, block_size=128, warmup_steps=10, eval_every=20),
    "lora": dict(method="lora", learning_rate=1e-2, max_steps=60, batch_size=8, block_size=128, warmup_steps=10, eval_every=20,
                 lora_rank=16, lora_alpha=32.0, lora_target_modules=("c_attn", "c_proj", "c_fc")),
}
BAR_DROP = 0.5
BAR_SECONDS = 180


def run_case(part: str, method: str, device: str, steps: int) -> dict:
    """One fine-tune in this process; returns its figures."""
    from playground.models import resolve_model
    from playground.finetune.data import read_file
    from playground.finetune.run import FineTuneSettings, run_finetune

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data_file = Path(tmp) / "GPL-3.txt"
        data_file.write_bytes(GPL3.read_bytes())
        if part == "adapt":
            base = resolve_model("demo")
            settings = FineTuneSettings(**ADAPT_CASES[method], device=device)
        else:
            base = resolve_model("random:gpt2")
            settings = FineTuneSettings(method=method, learning_rate=1e-4, max_steps=steps, batch_size=4, block_size=128,
                                        warmup_steps=0, eval_every=10**6, device=device)
        step_times: list[float] = []

        def progress(update: dict) -> None:
            if update["phase"] == "training":
                step_times.append(time.perf_counter())

        report = run_finetune(base, read_file(data_file), settings, f"bench-{method}", Path(tmp) / "models", progress=progress)
    # step_times[0]: training starts; [1]: after the first step (a warm-up); the last step includes the final validation.
    steps_s = [b - a for a, b in zip(step_times[1:-1], step_times[2:-1])]
    result = {
        "part": part, "method": method, "base": base.name, "device": report["machine"]["device"],
        "precision": report["machine"]["precision"], "steps": report["steps"],
        "val_perplexity_before": report["val_perplexity_before"], "val_perplexity_after": report["val_perplexity_after"],
        "val_perplexity_drop": round(1 - report["val_perplexity_after"] / report["val_perplexity_before"], 3),
        "train_seconds": report["train_seconds"], "wall_seconds": round(time.perf_counter() - started, 1),
        "seconds_per_step": round(statistics.median(steps_s), 3) if steps_s else None,
        "tokens_per_s": report["tokens_per_s"], "trainable_parameters": report["trainable_parameters"],
        "parameters": report["parameters"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),  # kilobytes on Linux
        "machine": {k: report["machine"][k] for k in ("cpu", "cores", "gpu", "torch_threads")},
    }
    if device == "cuda":
        import torch

        result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return result


def in_child(part: str, method: str, device: str, steps: int) -> dict:
    command = [sys.executable, __file__, "--child", part, method, device, str(steps)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=os.environ | {"TOKENIZERS_PARALLELISM": "false"})
    if done.returncode != 0:
        raise SystemExit(f"{part}/{method} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["adapt", "speed", "both"], default="both")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per speed case (one is a warm-up)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        part, method, device, steps = args.child
        print(json.dumps(run_case(part, method, device, int(steps))))
        return 0

    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results = []
    if args.part in ("adapt", "both"):
        for method in ADAPT_CASES:
            row = in_child("adapt", method, "cpu", 0)
            row["bar_met"] = row["val_perplexity_drop"] >= BAR_DROP and row["wall_seconds"] <= BAR_SECONDS
            results.append(row)
            print(f"adapt {method:>4}: validation perplexity {row['val_perplexity_before']:.1f} -> {row['val_perplexity_after']:.1f} "
                  f"(-{row['val_perplexity_drop']:.0%}), {row['steps']} steps, training {row['train_seconds']:.0f} s, "
                  f"wall {row['wall_seconds']:.0f} s, peak RSS {row['peak_rss_mb']} MB; bar "
                  f"{'met' if row['bar_met'] else 'NOT met'}", flush=True)
    if args.part in ("speed", "both"):
        for device in devices:
            for method in ("full", "lora"):
                row = in_child("speed", method, device, args.steps)
                results.append(row)
                extra = f", peak CUDA {row['peak_cuda_mb']} MB" if "peak_cuda_mb" in row else ""
                print(f"speed {method:>4} on {device} ({row['precision']}): {row['seconds_per_step']:.2f} s/step at block 128, "
                      f"batch 4; {row['trainable_parameters']:,} of {row['parameters']:,} parameters trained; "
                      f"peak RSS {row['peak_rss_mb']} MB{extra}", flush=True)
    if results:
        print(f"machine: {results[0]['machine']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0 if all(r.get("bar_met", True) for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
