"""Soak test: several API clients generating at once against a real app, then a tally.

    python scripts/soak.py                      # starts its own app on the demo model, 4 clients x 50 runs
    python scripts/soak.py --clients 8 --runs 20 --backends torch,onnx:int8
    python scripts/soak.py --url http://127.0.0.1:7860/ --db ~/.local/share/gpt2-playground/history.db

It reports errors (must be 0), history rows added (must be clients x runs), the server's resident
memory before and after, and whether runs replayed alone give the same text as under load (seeded
runs must not depend on who else is generating). Exits 1 when any of those fails. Not a unit test:
it takes minutes.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPTS = [
    "The return value of a function is",
    "A class definition",
    '<img src=x onerror="alert(1)"> The module',
    "Exceptions are raised when 😀",
    "\u05e9\u05dc\u05d5\u05dd \u202e the list",
    "",
]


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of a process in MB (Linux /proc), or None where that is not available."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(model: str, db: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--model", model, "--no-browser", "--port", str(port), "--db", str(db)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.time() + 900  # the first start may train the demo model
    for line in proc.stdout:
        print(f"  app | {line.rstrip()}", flush=True)
        if "Running on local URL" in line:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # keep draining
            return proc, f"http://127.0.0.1:{port}/"
        if time.time() > deadline:
            break
    proc.kill()
    raise SystemExit("The app did not start; its output is above.")


def parse_backends(text: str) -> list[tuple[str, str | None]]:
    backends = []
    for item in text.split(","):
        name, _, variant = item.strip().partition(":")
        backends.append((name, variant or None))
    return backends


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an app already running (default: start one on --model)")
    parser.add_argument("--model", default="demo", help="model for the app this script starts (default: demo)")
    parser.add_argument("--db", help="the history database the app writes (default: a temporary one)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--runs", type=int, default=50, help="generations per client")
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--backends", default="torch,onnx:int8",
                        help="backends the clients take in turn, e.g. torch,onnx:int8 (default)")
    parser.add_argument("--user", help="login user (password from $GPT2_PLAYGROUND_PASSWORD)")
    args = parser.parse_args(argv)

    from gradio_client import Client
    from tqdm import tqdm

    from playground.history import HistoryStore

    if args.url and not args.db:
        parser.error("--url needs --db (the app's history file), to count the rows it adds")
    db = Path(args.db).expanduser() if args.db else Path(tempfile.mkdtemp(prefix="soak-")) / "history.db"
    proc = None
    url = args.url
    if url is None:
        print(f"Starting the app on {args.model} with history {db} ...", flush=True)
        proc, url = start_app(args.model, db)
    auth = (args.user, os.environ.get("GPT2_PLAYGROUND_PASSWORD", "")) if args.user else None
    backends = parse_backends(args.backends)
    store = HistoryStore(db)
    try:
        warm = Client(url, auth=auth, verbose=False)
        for backend, variant in backends:  # build every backend (and export) before measuring
            warm.predict(prompt="warm up", max_new_tokens=2, seed=0, backend=backend, variant=variant, api_name="/generate")
        rows_before, rss_before = store.count(), rss_mb(proc.pid if proc else None)

        errors: list[str] = []
        texts: dict[tuple[int, int], tuple[str, dict]] = {}
        lock = threading.Lock()
        bar = tqdm(total=args.clients * args.runs, desc="generations", unit="run")

        def client_loop(c: int) -> None:
            client = Client(url, auth=auth, verbose=False)
            backend, variant = backends[c % len(backends)]
            for i in range(args.runs):
                kwargs = dict(prompt=PROMPTS[(c + i) % len(PROMPTS)], max_new_tokens=args.new_tokens, seed=c * 1000 + i,
                              temperature=0.7 + 0.1 * (i % 5), top_k=40, top_p=0.95, backend=backend, variant=variant)
                try:
                    text, run = client.predict(**kwargs, api_name="/generate")
                    if run["settings"]["seed"] != kwargs["seed"] or run["text"] != text:
                        raise AssertionError(f"the reply does not match the request (seed {run['settings']['seed']})")
                    with lock:
                        texts[(c, i)] = (text, kwargs)
                except Exception as exc:  # noqa: BLE001 - every failure is counted and reported, none stops the soak
                    with lock:
                        errors.append(f"client {c} run {i}: {type(exc).__name__}: {exc}")
                bar.update()

        started = time.perf_counter()
        threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        bar.close()
        elapsed_s = time.perf_counter() - started
        rows_after, rss_after = store.count(), rss_mb(proc.pid if proc else None)

        # Seeded runs replayed one at a time must give what they gave under load.
        replayed = sorted(texts)[:: max(1, len(texts) // 8)]
        mismatches = [key for key in replayed
                      if warm.predict(**texts[key][1], api_name="/generate")[0] != texts[key][0]]
        rows_expected = args.clients * args.runs
        rows_added = rows_after - rows_before
        ok = not errors and rows_added == rows_expected and not mismatches

        print()
        print(f"clients x runs        {args.clients} x {args.runs} = {rows_expected} generations in {elapsed_s:.0f} s "
              f"({rows_expected / elapsed_s:.2f} runs/s), backends {args.backends}, {args.new_tokens} new tokens each")
        print(f"errors                {len(errors)}")
        for line in errors[:10]:
            print(f"  {line}")
        print(f"history rows added    {rows_added} (expected {rows_expected})")
        print(f"replayed alone        {len(replayed) - len(mismatches)}/{len(replayed)} identical")
        if rss_before is not None:
            print(f"server memory (RSS)   {rss_before:.0f} MB before, {rss_after:.0f} MB after ({rss_after - rss_before:+.0f} MB)")
        else:
            print("server memory (RSS)   not measured (the app was not started by this script)")
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
