"""`python -m playground.evaluate`: score models on a text from a terminal (perplexity, bits per byte, KL to fp32).

    python -m playground.evaluate --model demo --data notes.txt
    python -m playground.evaluate --model demo --backend torch --backend onnx --variant fp32 --variant int8 --data builtin:en --json
    python -m playground.evaluate --model demo --data builtin:en --tasks python_mc_en --tasks ./my-tasks

Every model runs on every backend given, ONNX in every variant given: one table, each row saved to the history.
With --tasks, each row also runs those lm-evaluation-harness tasks (the `tasks` extra) and adds their accuracy.
Any bad input is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import PlaygroundError
from ..history import HistoryStore, default_db_path
from ..models import RANDOM_NOTICE, resolve_model
from ..onnx.export import VARIANTS
from ..registry import ModelRegistry
from .harness import resolve_tasks, shipped_task_names, task_cell, task_columns
from .run import EVALUATED_BACKENDS, Evaluation, evaluate_all, plan_all, targets_of
from .texts import BUILTIN_PREFIX, BUILTIN_SETS, read_data

COLUMNS = ("model", "backend", "variant", "perplexity", "bits_per_byte", "kl_to_fp32", "tokens", "window", "stride", "seconds",
           "tokens_per_s")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m playground.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True,
                   help="demo, demo-zh, a model folder, or a cached hub id such as gpt2 (repeat for several)")
    p.add_argument("--data", required=True,
                   help="a .txt, .jsonl or .csv file (20 MB at most), or a built-in held-out set: "
                        + ", ".join(BUILTIN_PREFIX + name for name in BUILTIN_SETS))
    p.add_argument("--column", help="the CSV column (or JSONL field) holding the text (default: 'text', or a CSV's only column)")
    p.add_argument("--backend", action="append", choices=EVALUATED_BACKENDS, help="torch (default) or onnx (repeat for both)")
    p.add_argument("--variant", action="append", choices=VARIANTS,
                   help="ONNX variant (default fp32; repeat for several); a quantized one is also compared with fp32")
    p.add_argument("--tasks", action="append", default=[], metavar="TASK",
                   help="an lm-evaluation-harness task to run too (repeat for several): one shipped with the playground ("
                        + ", ".join(shipped_task_names()) + "), a folder of task files (YAML + JSONL), or a task of lm-eval's "
                        "own when the hub is reachable; needs pip install -e \".[tasks]\"")
    p.add_argument("--window", type=int, default=None, help="tokens per window (default: the model's context)")
    p.add_argument("--stride", type=int, default=None, help="tokens between window starts (default: half a window)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--db", type=Path, default=None, help=f"history file to save to (default: {default_db_path()})")
    p.add_argument("--no-save", action="store_true", help="do not save the evaluations to the history")
    p.add_argument("--png", type=Path, default=None, help="also draw the bits per byte of each row into this PNG file")
    p.add_argument("--json", action="store_true", help="print the evaluations as JSON (a list, one object per row)")
    return p


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def table(evaluations: list[Evaluation]) -> str:
    """The evaluations as an aligned plain-text table, a column per task and metric after the others."""
    extra = task_columns([e.tasks for e in evaluations])
    rows = [list(COLUMNS) + [f"{task} {metric}" for task, metric in extra]] + [
        [_cell(getattr(e, c)) for c in COLUMNS] + [task_cell(e.tasks, task, metric) or "-" for task, metric in extra]
        for e in evaluations]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tqdm.auto import tqdm

    bars: dict[int, tqdm] = {}

    def progress(done: int, total: int, plan) -> None:
        bar = bars.get(id(plan))
        if bar is None:
            name = f"{plan.model} {plan.target.backend} {plan.target.variant or ''}".strip()
            bar = bars[id(plan)] = tqdm(total=total, desc=name, unit="window", file=sys.stderr, leave=False)
        bar.update(done - bar.n)
        if done == total:
            bar.close()

    try:
        tasks = resolve_tasks(args.tasks)  # before the text is read or any model loads: a bad task folder is refused at once
        text = read_data(args.data, args.column)
        plans = []
        for spec in args.model:
            source = resolve_model(spec)
            if source.notice and source.notice != RANDOM_NOTICE:  # the hub was unreachable: never score a stand-in silently
                raise PlaygroundError(key="evaluate.stand_in", field="model", notice=str(source.notice))
            registry = ModelRegistry(source, device=args.device)
            plans += plan_all(registry, targets_of([None], args.backend, args.variant), text, args.window, args.stride, tasks)
        history = None if args.no_save else HistoryStore(args.db or default_db_path())
        evaluations = evaluate_all(plans, text, history, on_progress=progress)
    except PlaygroundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([e.to_dict() for e in evaluations], indent=2, ensure_ascii=False))
    else:
        print(f"{text.name}: {text.bytes:,} bytes, sha256 {text.sha256[:12]}")
        print(table(evaluations))
        if history is not None:
            print(f"Saved to {history.path}")
    if args.png:
        from .figures import bits_per_byte_png

        bits_per_byte_png(evaluations, args.png, f"{text.name} ({text.bytes:,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
