"""A class on one link, measured: K students with their own logins generate at the same moment (a script, not a test).

    python scripts/classroom.py                                   # K = 1 4 8 16, demo model, onnx int8
    python scripts/classroom.py --model random:gpt2 --k 1 8 16 32
    python scripts/classroom.py --backend torch --variant fp32

Starts the app as a user would (`python app.py --auth-file F --db D`, no per-user limits) with accounts
s01..sNN, then for each K sends K requests at once: the even students through `gradio_client` (`/generate`),
the odd ones through `/v1/completions` streamed (httpx), each with their own login and seed, sampled, the same
number of new tokens. It prints, per K: aggregate new tokens/s (all tokens over the time from the common start to
the last finish) and its ratio to K = 1, time to first token p50/p95 (the streamed half; `/generate` answers
once, at the end), the slowest finish, errors, and whether every run was saved under its own user (from the
history file). Every K starts with a warm app (one request per path first: an ONNX variant is exported then).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.soak import free_port  # noqa: E402  (after the path: scripts/ is not a package on sys.path)

PROMPTS = ["The return value of a function is", "A class definition", "Exceptions are raised when", "The module"]


def start_app(args, users: dict[str, str], db: Path) -> tuple[subprocess.Popen, str]:
    auth_file = db.parent / "users.txt"
    auth_file.write_text("".join(f"{u}:{p}\n" for u, p in users.items()), encoding="utf-8")
    auth_file.chmod(0o600)
    port = free_port()
    command = [sys.executable, "app.py", "--model", args.model, "--backend", args.backend, "--variant", args.variant,
               "--auth-file", str(auth_file), "--db", str(db), "--no-browser", "--port", str(port),
               "--user-runs", "0", "--user-tokens-per-minute", "0"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        print(f"  app | {line.rstrip()}", flush=True)
        if "Running on local URL" in line:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # keep draining
            return proc, f"http://127.0.0.1:{port}/"
    proc.kill()
    raise SystemExit("The app did not start; its output is above.")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def ask_generate(client, student: int, args) -> dict:
    _, run = client.predict(prompt=PROMPTS[student % len(PROMPTS)], max_new_tokens=args.new_tokens, seed=student,
                            api_name="/generate")
    return {"run_ids": [run["run_id"]], "ttft": None}


def ask_v1(http, url: str, user: str, password: str, student: int, args, started: float) -> dict:
    body = {"prompt": PROMPTS[student % len(PROMPTS)], "max_tokens": args.new_tokens, "seed": student, "stream": True,
            "temperature": 1.0}
    ttft, run_ids = None, []
    with http.stream("POST", f"{url}v1/completions", json=body, timeout=600,
                     headers={"Authorization": f"Bearer {user}:{password}"}) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.read()[:300]!r}")
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"].get("message"))
            for choice in chunk.get("choices", []):
                if choice.get("text") and ttft is None:
                    ttft = time.perf_counter() - started
                if choice.get("run_id") is not None:
                    run_ids.append(choice["run_id"])
    return {"run_ids": run_ids, "ttft": ttft}


def one_class(k: int, url: str, users: dict[str, str], args, store) -> dict:
    from gradio_client import Client

    names = list(users)[:k]
    import httpx

    clients = {i: Client(url, auth=(names[i], users[names[i]]), verbose=False) for i in range(0, k, 2)}
    # Made before the start, as the gradio clients are: an httpx client loads its certificates when made (~0.1-0.4 s
    # of CPU each), which a request sent with `httpx.stream(...)` would pay inside the measured time to first token.
    https = {i: httpx.Client() for i in range(1, k, 2)}
    barrier = threading.Barrier(k + 1)
    results: dict[int, dict] = {}
    errors: list[str] = []
    lock = threading.Lock()

    def student(i: int) -> None:
        barrier.wait()
        try:
            if i % 2 == 0:
                result = ask_generate(clients[i], i, args)
            else:
                result = ask_v1(https[i], url, names[i], users[names[i]], i, args, started[0])
            result["finished"] = time.perf_counter() - started[0]
            with lock:
                results[i] = result
        except Exception as exc:  # noqa: BLE001 - counted and printed
            with lock:
                errors.append(f"{names[i]}: {type(exc).__name__}: {str(exc)[:200]}")

    started = [0.0]
    threads = [threading.Thread(target=student, args=(i,)) for i in range(k)]
    for thread in threads:
        thread.start()
    started[0] = time.perf_counter()
    barrier.wait()
    for thread in threads:
        thread.join()
    for http in https.values():
        http.close()
    # Tokens made and owners: from the history, the record of what was produced and for whom.
    tokens, misplaced = 0, 0
    for i, result in results.items():
        for run_id in result["run_ids"]:
            row = store.get(run_id, owner=names[i])
            if row is None:
                misplaced += 1
            else:
                tokens += len(row["tokens"]["output"])
    slowest = max((r["finished"] for r in results.values()), default=None)
    ttfts = [r["ttft"] for r in results.values() if r["ttft"] is not None]
    return {"k": k, "tokens": tokens, "seconds": slowest, "tokens_per_s": tokens / slowest if slowest else None,
            "ttft_p50": percentile(ttfts, 0.5), "ttft_p95": percentile(ttfts, 0.95), "errors": errors,
            "saved_as_own": sum(len(r["run_ids"]) for r in results.values()) - misplaced, "runs": k, "misplaced": misplaced}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--backend", default="onnx", choices=("torch", "onnx"))
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON lines too")
    args = parser.parse_args(argv)

    from playground.history import HistoryStore

    users = {f"s{i:02d}": f"pw-{i:02d}-{os.urandom(4).hex()}" for i in range(1, max(args.k) + 1)}
    db = Path(tempfile.mkdtemp(prefix="classroom-")) / "history.db"
    print(f"Starting the app: {args.model} on {args.backend} {args.variant}, {len(users)} logins, history {db}", flush=True)
    proc, url = start_app(args, users, db)
    store = HistoryStore(db)
    rows = []
    try:
        one_class(2, url, users, argparse.Namespace(**{**vars(args), "new_tokens": 4}), store)  # warm both paths
        for k in args.k:
            row = one_class(k, url, users, args, store)
            rows.append(row)
            base = rows[0]["tokens_per_s"]
            ratio = f"{row['tokens_per_s'] / base:.2f}x" if base and row["tokens_per_s"] else "-"
            ms = lambda s: f"{s * 1000:.0f} ms" if s is not None else "-"  # noqa: E731
            print(f"K={k:>3}: {row['tokens']:>5} tokens in {row['seconds']:.2f} s = {row['tokens_per_s']:.1f} tokens/s ({ratio} of K={args.k[0]}); "
                  f"TTFT p50 {ms(row['ttft_p50'])}, p95 {ms(row['ttft_p95'])}; slowest {row['seconds']:.2f} s; "
                  f"errors {len(row['errors'])}; runs saved as their own user {row['saved_as_own']}/{row['runs']}", flush=True)
            for error in row["errors"][:5]:
                print(f"    {error}")
            if args.json:
                print(json.dumps(row))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return 1 if any(row["errors"] or row["misplaced"] or row["saved_as_own"] != row["runs"] for row in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
