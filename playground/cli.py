"""Command line of the app (`python app.py` and the `gpt2-playground` script): parse flags, build, launch."""

from __future__ import annotations

import argparse
import gc
import sys

from .errors import PlaygroundError
from .limits import UserLimits


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpt2-playground", description="Interactive GPT-2 text-generation playground.")
    parser.add_argument("--model", default="gpt2",
                        help="hub id (gpt2, distilgpt2, gpt2-medium, uer/gpt2-chinese-cluecorpussmall, ...), a local "
                             "Hugging Face folder, 'demo' or 'demo-zh' (the offline English or Chinese demo model) "
                             "(default: gpt2; falls back to the offline demo model when the hub is unreachable)")
    parser.add_argument("--backend", default="torch", choices=["torch", "onnx", "remote"],
                        help="inference backend (default: torch); remote: an OpenAI-compatible engine at --remote-url")
    parser.add_argument("--variant", default="fp32", choices=["fp32", "fp16", "int8", "int4"],
                        help="ONNX variant (default: fp32; fp16 needs a GPU, int8 runs on the CPU)")
    parser.add_argument("--remote-url", metavar="URL",
                        help="an OpenAI-compatible engine that returns logprobs (vLLM, llama.cpp's server, another playground), "
                             "e.g. http://127.0.0.1:8000/v1; it must serve the model given by --model, whose tokenizer reads its tokens")
    parser.add_argument("--remote-model", metavar="NAME", help="the engine's name for the model (default: the first it lists)")
    parser.add_argument("--remote-timeout", metavar="SECONDS", type=float, default=30.0,
                        help="longest wait for the engine's next bytes (default: 30)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run (default: auto)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    parser.add_argument("--share", action="store_true", help="also make a public Gradio link")
    parser.add_argument("--auth", metavar="USER[:PASSWORD]",
                        help="ask for a login; with USER alone the password comes from $GPT2_PLAYGROUND_PASSWORD, "
                             "which keeps it out of the process list")
    parser.add_argument("--auth-file", metavar="FILE", help="ask for a login: FILE holds USER:PASSWORD lines")
    parser.add_argument("--admin", metavar="USER", action="append", default=None,
                        help="a login that sees, exports and deletes everyone's runs (the teacher; repeat for several); "
                             "every other user sees only their own")
    parser.add_argument("--user-runs", metavar="N", type=int, default=UserLimits.runs,
                        help=f"behind a login: runs one user may have going at once (default: {UserLimits.runs}; 0: no limit)")
    parser.add_argument("--user-tokens-per-minute", metavar="N", type=int, default=UserLimits.tokens_per_minute,
                        help="behind a login: new tokens one user may ask for per minute "
                             f"(default: {UserLimits.tokens_per_minute}; 0: no limit)")
    parser.add_argument("--batch-rows", metavar="N", type=int, default=None,
                        help="rows (samples of all users' runs) decoded together in one batch, and so runs at once; "
                             "more wait their turn (default: 8 per core, 16 to 64)")
    parser.add_argument("--db", default=None,
                        help="history database (default: $GPT2_PLAYGROUND_DB or the user data folder, "
                             "e.g. ~/.local/share/gpt2-playground/history.db)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from .history import open_history
    from .models import resolve_model
    from .service import Playground
    from .ui.app import build_demo, launch_kwargs
    from .ui.security import auth_file_warning, check_admins, exposure_warning, resolve_login

    try:
        if args.backend == "remote" and not args.remote_url:
            raise PlaygroundError(key="remote.no_url")
        login = resolve_login(args.auth, args.auth_file)
        admins = check_admins(args.admin, login)
        if args.user_runs < 0 or args.user_tokens_per_minute < 0:
            raise PlaygroundError("--user-runs and --user-tokens-per-minute take a count, 0 for no limit.")
        limits = UserLimits(runs=args.user_runs, tokens_per_minute=args.user_tokens_per_minute)
        if args.batch_rows is not None and not 1 <= args.batch_rows <= 256:
            raise PlaygroundError("--batch-rows takes a count from 1 to 256.")
        source = resolve_model(args.model)
        history, history_disabled = open_history(args.db)
        playground = Playground(source, device=args.device, default_backend=args.backend, default_variant=args.variant,
                                history=history, history_disabled=history_disabled, remote_url=args.remote_url,
                                remote_model=args.remote_model, remote_timeout_s=args.remote_timeout, admins=admins,
                                limits=limits, batch_rows=args.batch_rows)
        info = playground.backend().info  # load now: a broken model fails here, not on the first click
    except PlaygroundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if info.notice:
        print(info.notice, flush=True)
    print(f"Model in use: {info.label()}", flush=True)
    if history is not None:
        print(f"History: {history.path}", flush=True)
    else:
        print(f"History disabled: {history_disabled}", flush=True)
    if login is not None:
        print(f"Login required: {', '.join(login.users())} (from {login.origin}); each sees their own runs"
              + (f", {', '.join(sorted(admins))} everyone's" if admins else ""), flush=True)
    for warning in (auth_file_warning(args.auth_file), exposure_warning(args.share, args.host, login)):
        if warning:
            print(warning, file=sys.stderr, flush=True)

    demo = build_demo(playground)
    # What is loaded now (torch, transformers, Gradio, the model: millions of objects) lives as long as the app: out of
    # the cyclic garbage collector's sight, a full collection no longer walks it. Such a collection stops every thread,
    # the decoding batch and every stream with it: 16 runs at once on random:gpt2 saw 224-277 ms pauses, 29-41 ms
    # frozen, and 191 -> 206 tokens/s (scripts/classroom.py --model random:gpt2 --k 16, 2026-12-05).
    gc.collect()
    gc.freeze()
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        inbrowser=not args.no_browser,
        share=args.share,
        prevent_thread_lock=True,
        **launch_kwargs(login),
    )
    if args.share and not demo.share_url:
        print("No public link was made (the share server is unreachable from here); serving locally only.", flush=True)
    elif demo.share_url:
        print(f"Public link: {demo.share_url}", flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        if playground.finetune_jobs.running:
            print("Stopping the fine-tuning job at the end of its step; its checkpoint is kept for Resume.", flush=True)
            playground.finetune_jobs.shutdown()
        demo.close()
    return 0
