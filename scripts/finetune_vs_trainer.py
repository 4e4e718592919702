"""The playground's default fine-tune against a plain transformers `Trainer` given the same seconds (issue 29, part 2).

    GPT2_PLAYGROUND_MODELS=/work/main/models python scripts/finetune_vs_trainer.py --model demo --runs 3
    GPT2_PLAYGROUND_MODELS=/work/main/models python scripts/finetune_vs_trainer.py --model demo-zh --runs 3
    python scripts/finetune_vs_trainer.py --set learning_rate=1e-3 --set epochs=5   # explore other settings

Texts the base model never trained on: for `demo` (English Python documentation) Debian's GPL-3
(/usr/share/common-licenses/GPL-3); for `demo-zh` the held-out tenth of its own corpus (fortunes-zh,
`corpus_zh.split_texts`: every 10th entry, never trained on).

Each run, in one process and with the same torch thread count for both (`--threads`, 1 by default: the
machine's 2 cores are often shared, and one thread on a busy core beats two):
  1. ours: `plan_finetune` + `execute_plan` with FineTuneSettings() (the defaults; `--set` changes one),
     timed by its own report's `train_seconds` (the training loop, its validations included);
  2. Trainer: the same base weights, trained on our prepared training blocks (the same split, so the
     held-out text is identical) with `TrainingArguments` at their defaults except the output folder,
     no saving, no evaluation and no reporting; `max_steps` is the number of its steps that fit in our
     seconds (counted by a first, discarded run under a time limit), so its linear decay ends on time,
     and a time callback stops it at our seconds in any case;
  3. both scored the same way: `blocks_loss` on our validation blocks (perplexity = exp of the mean loss).

GPT-2 shifts labels inside the model, so the Trainer sees each block's first `block_size` tokens as both
input and labels (block_size - 1 targets a block, against our block_size: one token fewer, the same text).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GPL3 = Path("/usr/share/common-licenses/GPL-3")


def training_text(model: str):
    from playground.finetune.data import from_text, read_file

    if model == "demo-zh":
        from playground.training.corpus_zh import load_zh_texts, split_texts

        _, held_out = split_texts(load_zh_texts())
        return from_text("\n\n".join(held_out), source="fortunes-zh held-out split")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "GPL-3.txt"
        path.write_bytes(GPL3.read_bytes())
        return read_file(path)


def parse_overrides(pairs: list[str]) -> dict:
    values = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        values[key.strip()] = value.strip()
    return values


def run_ours(base, text, overrides: dict, tmp: Path) -> dict:
    from transformers import GPT2LMHeadModel

    from playground.finetune.run import FineTuneSettings, execute_plan, plan_finetune
    from playground.training.engine import blocks_loss

    settings = FineTuneSettings.from_user(device="cpu", **overrides)
    plan = plan_finetune(base, text, settings, "vs-trainer", tmp / "models")
    report = execute_plan(plan)
    model = GPT2LMHeadModel.from_pretrained(plan.out_dir).eval()
    return {"plan": plan, "report": report, "val_loss": blocks_loss(model, plan.data.val_blocks)}


def run_trainer(base, train_blocks, seconds: float, tmp: Path, max_steps: int, learning_rate: float | None = None) -> dict:
    """A plain Trainer for at most `seconds` of training; returns the model and the steps it took."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from playground.models import load_torch_model

    class TimeLimit(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if time.perf_counter() - self.started >= seconds:
                control.should_training_stop = True

    inputs = train_blocks[:, :-1]  # (N, block_size)
    dataset = [{"input_ids": row, "labels": row} for row in inputs]
    model = load_torch_model(base)
    arguments = TrainingArguments(output_dir=str(tmp / "trainer"), save_strategy="no", eval_strategy="no", report_to="none",
                                  use_cpu=True, max_steps=max_steps, disable_tqdm=True, logging_strategy="no",
                                  **({"learning_rate": learning_rate} if learning_rate else {}))
    trainer = Trainer(model=model, args=arguments, train_dataset=dataset, callbacks=[TimeLimit()])
    started = time.perf_counter()
    output = trainer.train()
    return {"model": model.eval(), "steps": output.global_step, "seconds": time.perf_counter() - started,
            "learning_rate": arguments.learning_rate, "batch_size": arguments.per_device_train_batch_size}


def one_run(model_name: str, overrides: dict, trainer_lr: float | None = None) -> dict:
    from playground.models import load_torch_model, resolve_model
    from playground.training.engine import blocks_loss

    base = resolve_model(model_name)
    text = training_text(model_name)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ours = run_ours(base, text, overrides, tmp)
        plan, report = ours["plan"], ours["report"]
        seconds = report["train_seconds"]
        val_blocks = plan.data.val_blocks
        base_loss = blocks_loss(load_torch_model(base), val_blocks)
        # How many Trainer steps fit in our seconds (a discarded run), then the run whose linear decay ends on time.
        counted = run_trainer(base, plan.data.train_blocks, seconds, tmp, max_steps=10**6, learning_rate=trainer_lr)["steps"]
        trainer = run_trainer(base, plan.data.train_blocks, seconds, tmp, max_steps=max(1, counted),
                              learning_rate=trainer_lr)
        trainer_loss = blocks_loss(trainer["model"], val_blocks)
    return {
        "model": model_name, "settings": report["settings"], "data": {k: report["data"][k] for k in
                                                                      ("source", "tokens", "train_blocks", "val_blocks")},
        "threads": report["machine"]["torch_threads"],
        "base_ppl": math.exp(base_loss),
        "ours": {"ppl": math.exp(ours["val_loss"]), "steps": report["steps"], "seconds": seconds,
                 "evaluations": len(report["loss_curve"]["val"]), "kept_best": report["kept_best"]},
        "trainer": {"ppl": math.exp(trainer_loss), "steps": trainer["steps"], "seconds": round(trainer["seconds"], 1),
                    "learning_rate": trainer["learning_rate"], "batch_size": trainer["batch_size"]},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["demo", "demo-zh"], default="demo")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, the same for both")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a FineTuneSettings field for our run")
    parser.add_argument("--trainer-lr", type=float, help="the Trainer's learning_rate (default: TrainingArguments' own, 5e-5)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(args.threads)  # execute_plan's training_threads() takes at most this many
    overrides = parse_overrides(args.set)
    rows = []
    for number in range(1, args.runs + 1):
        row = one_run(args.model, overrides, args.trainer_lr)
        rows.append(row)
        ours, trainer = row["ours"], row["trainer"]
        if number == 1:
            s = row["settings"]
            print(f"{args.model} on {row['data']['source']}: {row['data']['tokens']} tokens, {row['data']['train_blocks']} train / "
                  f"{row['data']['val_blocks']} validation blocks of {s['block_size']}; torch threads {row['threads']}")
            print(f"ours: {s['method']}, lr {s['learning_rate']:g}, epochs {s['epochs']}, batch {s['batch_size']}, "
                  f"warmup {s['warmup_steps']}; Trainer: defaults (lr {trainer['learning_rate']:g}, batch {trainer['batch_size']}, "
                  f"linear decay)")
            print("run | base ppl | ours: ppl  steps  evals  train s | Trainer: ppl  steps  s     | ours / Trainer")
        print(f"{number:>3} | {row['base_ppl']:8.1f} | {ours['ppl']:9.1f} {ours['steps']:6d} {ours['evaluations']:6d} "
              f"{ours['seconds']:8.1f} | {trainer['ppl']:12.1f} {trainer['steps']:6d} {trainer['seconds']:5.1f} | "
              f"{ours['ppl'] / trainer['ppl']:.3f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
