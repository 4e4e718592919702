"""`python -m playground.finetune`: fine-tune a GPT-2 on a text file from a terminal (the run is playground.finetune.run).

    python -m playground.finetune --model demo --data notes.txt --name my-notes --method lora --max-steps 200

    python -m playground.finetune --resume my-notes   # a stopped run goes on from its last checkpoint
    accelerate launch --multi_gpu --num_processes 4 -m playground.finetune ...   # data parallel on 4 GPUs (torchrun too)

Prints what will be trained (data statistics, the first examples, notices), a progress bar, and the
report; any bad input is one line on stderr and exit code 2. Ctrl-C cancels: no model is written, and a
checkpoint is kept for --resume.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from ..errors import PlaygroundError, TrainingCancelled
from ..models import RANDOM_NOTICE, resolve_model
from ..paths import models_dir
from .data import read_file
from ..training.engine import data_parallel
from .checkpoints import JobFolder
from .run import (DEFAULT_LEARNING_RATES, MAX_RATE_SCALE, FineTuneSettings, execute_plan, kept_best_text, plan_finetune, plan_resume,
                  stopped_early_text, test_text)


def build_parser() -> argparse.ArgumentParser:
    d = FineTuneSettings()
    p = argparse.ArgumentParser(prog="python -m playground.finetune", description="Fine-tune a GPT-2 model on your own text.")
    p.add_argument("--model", help="base model: demo, demo-zh, a model folder, or a cached hub id such as gpt2")
    p.add_argument("--data", type=Path, help="a .txt (paragraphs, or one text a line), .jsonl or .csv file (20 MB at most)")
    p.add_argument("--column", help="the CSV column (or JSONL field) holding the text (default: 'text', or a CSV's only column)")
    p.add_argument("--name", help="the new model's folder name, created in --models-dir")
    p.add_argument("--resume", metavar="NAME", help="go on with the stopped job NAME from its last checkpoint (its model, data and "
                                                    "settings are the job's own; the options above are not needed)")
    p.add_argument("--models-dir", type=Path, default=None, help=f"where to save it (default: {models_dir()})")
    p.add_argument("--method", choices=["full", "lora"], default=d.method)
    p.add_argument("--lr", "--learning-rate", dest="learning_rate", type=float, default=None,
                   help=f"learning rate (default by the model's size: full {DEFAULT_LEARNING_RATES['full']}, lora "
                        f"{DEFAULT_LEARNING_RATES['lora']} for GPT-2 small and larger, up to {MAX_RATE_SCALE}x for smaller models)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--max-steps", type=int, default=None, help="optimizer steps; overrides --epochs")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--grad-accum", dest="gradient_accumulation", type=int, default=d.gradient_accumulation)
    p.add_argument("--block-size", type=int, default=d.block_size)
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm, help="0 turns clipping off")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--test-fraction", type=float, default=d.test_fraction,
                   help="a share of the blocks held out for a test at the end, before and after (default 0: none)")
    p.add_argument("--test-data", type=Path, default=None,
                   help="a test file of your own (.txt, .jsonl or .csv; --column applies), scored before and after instead of a "
                        "test split; a notice says how much of it is also in the training text")
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="steps between checkpoints, to resume from (default: at every evaluation; a cancel writes one too)")
    p.add_argument("--early-stopping-patience", type=int, default=d.early_stopping_patience,
                   help="stop after this many evaluations in a row without validation loss improving (0: never)")
    p.add_argument("--early-stopping-min-delta", type=float, default=d.early_stopping_min_delta,
                   help="the least drop in validation loss that counts as improving")
    p.add_argument("--lora-rank", type=int, default=d.lora_rank)
    p.add_argument("--lora-alpha", type=float, default=d.lora_alpha)
    p.add_argument("--lora-dropout", type=float, default=d.lora_dropout)
    p.add_argument("--lora-targets", dest="lora_target_modules", default=",".join(d.lora_target_modules))
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=d.device)
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    return p


SETTING_ARGS = ("method", "learning_rate", "epochs", "max_steps", "batch_size", "gradient_accumulation", "block_size", "warmup_steps",
                "weight_decay", "max_grad_norm", "seed", "val_fraction", "test_fraction", "eval_every", "checkpoint_every", "early_stopping_patience",
                "early_stopping_min_delta", "lora_rank", "lora_alpha", "lora_dropout",
                "lora_target_modules", "device")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.resume and not (args.model and args.data and args.name):
        parser.error("--model, --data and --name are required (or --resume NAME)")
    cancel = threading.Event()
    accelerator = data_parallel()  # started by accelerate launch or torchrun: one of several processes
    processes = accelerator.num_processes if accelerator is not None else 1
    if accelerator is not None and not accelerator.is_main_process:
        sys.stdout = open(os.devnull, "w")  # the first process speaks for all of them (errors still reach stderr)
    try:
        if args.resume:
            plan = plan_resume(args.models_dir or models_dir(), args.resume, processes=processes)
            settings, base = plan.settings, plan.base
            print(f"Resuming {plan.name} from step {plan.resume['step']} of {plan.total_steps}.")
        else:
            settings = FineTuneSettings.from_user(**{name: getattr(args, name) for name in SETTING_ARGS})
            base = resolve_model(args.model)
            if base.notice and base.notice != RANDOM_NOTICE:  # the hub was unreachable: never fine-tune a stand-in silently
                raise PlaygroundError(key="finetune.stand_in", field="model", notice=str(base.notice))
            plan = plan_finetune(base, read_file(args.data, args.column), settings, args.name, args.models_dir or models_dir(),
                                 processes=processes, test_data=read_file(args.test_data, args.column) if args.test_data else None)
        summary = plan.summary()
        data = summary["data"]
        print(f"Fine-tuning {base.name} ({settings.method}, lr {settings.effective_learning_rate:g}) on {data['source']} "
              f"({data['encoding']}): {data['texts']} texts, {data['tokens']} tokens, {data['train_blocks']} training and "
              f"{data['val_blocks']} validation blocks of {data['block_size']}; {plan.total_steps} steps on {plan.device} ({plan.precision})"
              + (f", {processes} processes with {settings.batch_size} blocks a batch each." if processes > 1 else "."))
        for example in summary["preview"][:3]:
            print(f"  {example['tokens']:>5} tokens  {' '.join(example['text'].split())[:80]}")
        for notice in summary["notices"]:
            print(f"note: {notice}")

        def on_interrupt(signum, frame):  # the first Ctrl-C stops after the step (with a checkpoint); a second at once
            if cancel.is_set():
                raise KeyboardInterrupt
            cancel.set()
            print("\nStopping after this step (Ctrl-C again to stop at once)...", file=sys.stderr)

        previous = signal.signal(signal.SIGINT, on_interrupt)
        try:
            report = execute_plan(plan, cancel=cancel, show_bar=accelerator is None or accelerator.is_main_process,
                                  accelerator=accelerator)
        except (KeyboardInterrupt, TrainingCancelled):
            job = JobFolder.of(plan.out_dir.parent, plan.name)
            step = job.latest_step()
            print("Cancelled: no model was saved." + (f" Go on from step {step} with --resume {plan.name}"
                                                        f"{'' if args.models_dir is None else ' --models-dir ' + str(args.models_dir)}."
                                                        if step else ""), file=sys.stderr)
            return 130
        finally:
            signal.signal(signal.SIGINT, previous)
    except PlaygroundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(f"Validation perplexity {report['val_perplexity_before']:.2f} -> {report['val_perplexity_after']:.2f} "
              f"({report['val_perplexity_change']:+.0%}) in {report['train_seconds']:.0f} s of training "
              f"({report['tokens_per_s']:.0f} tokens/s).")
        if report.get("test"):
            print(test_text(report["test"], "en"))
        if report.get("stopped_early"):
            print(f"note: {stopped_early_text(report['stopped_early'], 'en')}")
        if report.get("kept_best"):
            print(f"note: {kept_best_text(report['kept_best'], 'en')}")
        print(f"Saved {plan.out_dir} (training_report.json inside; TensorBoard: tensorboard --logdir {report['tensorboard']}).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
