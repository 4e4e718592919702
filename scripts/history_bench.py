"""History at the size of a term of classes: N runs in one file, the size per run, and every History query timed.

    python scripts/history_bench.py                       # 100,000 runs of 128 tokens, 10 alternatives each
    python scripts/history_bench.py --runs 20000 --users 30

Builds a history file of `--runs` runs (a real 128-token run of the tiny demo recipe's model with 10 alternatives
per token, its prompt and output varied per run, owners spread over `--users` logins), then times each query the
History tab and the API make, as the tab makes them (`PAGE_SIZE` rows): recent, search (a long word, a word too
short for the trigram index, a Chinese word across prompt and output, a group), open one run, the model and backend
filters, one user's runs, and the export of a page. Prints the file size per run and each query's median of
`--repeats` runs in ms. Not a test: building 100,000 runs takes minutes.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORDS = "the value of a function class module return list string error raise import method object type".split()
ZH = "床前明月光疑是地上霜举头望思故乡读书人不是只为了考试春风又绿江南岸"


def a_real_run() -> dict:
    """A 128-token run with 10 alternatives per token, as the app saves it (tiny demo recipe, longer context)."""
    import torch

    from playground.backends.torch import TorchBackend
    from playground.config import GenerationSettings
    from playground.generation import generate
    from playground.models import resolve_model
    from playground.records import saved_row
    from playground.training.demo import DemoRecipe, build_demo_model

    folder = Path(tempfile.mkdtemp(prefix="history-bench-")) / "model"
    build_demo_model(folder, DemoRecipe(n_layer=2, n_embd=64, n_head=2, context=160, steps=40, batch_size=4, threads=1),
                     progress=False)
    torch.manual_seed(0)
    source = resolve_model(str(folder))
    result = generate(TorchBackend(source, device="cpu"), source, "The value of",
                      GenerationSettings(max_new_tokens=128, seed=3, top_alternatives=10))
    return saved_row(result, "complete")


def fill(store, template: dict, runs: int, users: int) -> None:
    """Insert `runs` variations of `template` in transactions of 1,000, as the app's save_run would store them."""
    from playground.history import JSON_COLUMNS
    from playground.token_pack import pack_tokens

    rng = random.Random(0)
    packed = pack_tokens(template["tokens"])
    base = {k: (json.dumps(v) if k in JSON_COLUMNS else v) for k, v in template.items() if k != "tokens"}
    done = 0
    while done < runs:
        batch = []
        for i in range(done, min(runs, done + 1000)):
            prompt = " ".join(rng.choice(WORDS) for _ in range(6)) + " " + "".join(rng.choice(ZH) for _ in range(4))
            output = "".join(rng.choice(ZH) for _ in range(20)) + " " + " ".join(rng.choice(WORDS) for _ in range(12))
            batch.append(base | {"created_at": f"2026-12-{1 + i % 28:02d}T00:00:00.000+00:00", "prompt": prompt, "output": output,
                                 "owner": f"s{i % users:02d}", "model": ("demo-gpt2", "demo-zh-gpt2", "tiny")[i % 3],
                                 "backend": ("torch", "onnx")[i % 2], "tokens_packed": packed,
                                 "group_id": f"g{i // 4}" if i % 10 < 4 else None})
        with store._write() as db:
            db.table("runs").insert_all(batch)
        done += len(batch)
        print(f"\r  {done:,} runs", end="", flush=True)
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--db", type=Path, default=None, help="the file to build (default: a temporary one)")
    args = parser.parse_args(argv)

    from playground.history import HistoryStore
    from playground.ui.history_tab import PAGE_SIZE

    path = args.db or Path(tempfile.mkdtemp(prefix="history-bench-")) / "history.db"
    print("A real run to copy ...", flush=True)
    template = a_real_run()
    json_size = len(json.dumps(template["tokens"]))
    store = HistoryStore(path)
    print(f"Filling {path} with {args.runs:,} runs ...", flush=True)
    started = time.perf_counter()
    fill(store, template, args.runs, args.users)
    print(f"  {time.perf_counter() - started:.0f} s")
    with store._connect() as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = path.stat().st_size
    some_id = args.runs // 2
    queries = {
        "recent (a page)": lambda: store.recent(PAGE_SIZE),
        "search a long word": lambda: store.search("function", PAGE_SIZE),
        "search a short word": lambda: store.search("of", PAGE_SIZE),
        "search Chinese (2 chars)": lambda: store.search("明月", PAGE_SIZE),
        "search Chinese (3 chars)": lambda: store.search("读书人", PAGE_SIZE),
        "search a group": lambda: store.search("group:g100", PAGE_SIZE),
        "open one run (with its tokens)": lambda: store.get(some_id),
        "filter: model": lambda: store.search("", PAGE_SIZE, model="demo-zh-gpt2"),
        "filter: backend": lambda: store.search("", PAGE_SIZE, backend="onnx"),
        "one user's runs": lambda: store.search("", PAGE_SIZE, owner="s07"),
        "one user's search": lambda: store.search("value", PAGE_SIZE, owner="s07"),
        "revision (the tab's poll)": lambda: store.revision("s07"),
        "export one run (JSON Lines, 140 kB)": lambda: store.export(path.parent / "one.jsonl", "jsonl", [some_id]),
        "export a page (JSON Lines, 28 MB)": lambda: store.export(path.parent / "page.jsonl", "jsonl",
                                                                  [r["id"] for r in store.recent(PAGE_SIZE)]),
    }
    print(f"\n{args.runs:,} runs: {size / 2**20:.0f} MiB, {size / args.runs / 1000:.1f} kB per run "
          f"(token records {len(template['tokens']['output'])} + {len(template['tokens']['prompt'])} tokens: "
          f"{json_size / 1000:.0f} kB as JSON)\n")
    print(f"| query | median of {args.repeats} (ms) | rows |")
    print("|---|---|---|")
    for name, query in queries.items():
        times, rows = [], None
        for _ in range(args.repeats):
            t = time.perf_counter()
            result = query()
            times.append((time.perf_counter() - t) * 1000)
            rows = len(result) if isinstance(result, list) else 1 if isinstance(result, dict) else "-" if isinstance(result, tuple) else result
        print(f"| {name} | {statistics.median(times):.1f} | {rows} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
