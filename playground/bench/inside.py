"""How long the Inside view takes, and how much memory: one position of a run, and the whole-run logit-lens grid.

    python -m playground.bench.inside --model random:gpt2 --tokens 128

A run of `--tokens` tokens in all (half prompt, half generated greedily without early stop), then:
opening it (one pass for the residual stream), everything the tab shows for one position (the
report: logit lens, funnel, one block opened, KV cache; plus the run grid), a funnel recomputed from
the cached logits (a slider), the whole-run logit-lens grid alone, and attribution (a button). Each
is timed after a warm-up on another position, `--repeats` times (median reported); peak memory is
the process's resident high-water mark during each, reset before it (Linux /proc/self/clear_refs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from ..config import GenerationSettings
from ..generation import generate
from ..machine import machine_description
from .engine import REFERENCE_TEXT


def resident_mb() -> tuple[float, float]:
    """(current, peak since the last reset) resident memory of this process in MB."""
    fields = dict(line.split(":", 1) for line in open("/proc/self/status") if line.startswith(("VmRSS", "VmHWM")))
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM to the current RSS (Linux 4.0+)


def measure(fn, repeats: int) -> dict:
    """Median wall time of `fn` over `repeats` calls; the process's peak resident memory while it ran, and how far
    above the resident memory at its start that peak went (memory freed earlier and kept by the allocator is reused
    without showing here, so the absolute peak is the figure to trust)."""
    times, added, peaks = [], [], []
    for _ in range(repeats):
        reset_peak()
        before, _ = resident_mb()
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
        peaks.append(resident_mb()[1])
        added.append(peaks[-1] - before)
    return {"seconds": round(statistics.median(times), 3), "min_seconds": round(min(times), 3),
            "peak_rss_mb": round(max(peaks), 1), "peak_added_mb": round(max(added), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m playground.bench.inside", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:gpt2", help="model spec (default: random:gpt2, the GPT-2-small shape)")
    parser.add_argument("--backend", default="torch", choices=("torch", "onnx"))
    parser.add_argument("--variant", default="fp32", help="ONNX variant (fp32, int8, int4)")
    parser.add_argument("--tokens", type=int, default=128, help="tokens in the run, prompt and output (default: 128)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2, the goal's 2 cores)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quantization", default="", help="also compare these ONNX variants' residuals with PyTorch fp32 "
                                                             "layer by layer, e.g. int8,int4 (exports them if needed)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)

    import torch

    from ..analysis.inside import GRID_CHUNK_ROWS, Inside, lens_grid
    from ..backends.torch import TorchBackend
    from ..models import resolve_model

    torch.set_num_threads(args.threads)
    source = resolve_model(args.model)
    reference = TorchBackend(source, device="cpu")
    if args.backend == "torch":
        backend = reference
    else:
        from ..backends.onnx import OnnxBackend

        backend = OnnxBackend(source, args.variant, device="cpu", threads=args.threads)
    prompt_tokens = args.tokens // 2
    ids = (source.codec.encode(REFERENCE_TEXT) * 8)[:prompt_tokens]
    prompt = source.codec.decode(ids)
    settings = GenerationSettings(max_new_tokens=args.tokens - prompt_tokens, do_sample=True, temperature=0.9, top_k=50, top_p=0.95,
                                  seed=1)
    result = generate(backend, source, prompt, settings, ignore_eos=True)
    length = len(result.prompt_tokens) + len(result.tokens)
    positions = [length - 1, length // 2 + 5, length // 2 + 17, length - 30]  # the first one warms up

    loaded_mb = resident_mb()[0]  # the model(s) and the run, before any Inside work
    view = Inside(result, backend, reference.model, source.codec)
    view.report(positions[0], 0, 0)
    view.grid()
    rows = {}
    rows["open_run"] = measure(lambda: Inside(result, backend, reference.model, source.codec), args.repeats)
    clicks = iter(positions[1:] * args.repeats)

    def one_position():  # a fresh view each time: nothing cached, as for a run opened for the first time
        fresh = Inside(result, backend, reference.model, source.codec)
        fresh.report(next(clicks), 5 % fresh.trace.n_layers, 3 % fresh.reference.config.n_head)

    rows["tab_for_one_position"] = measure(one_position, args.repeats)
    another = iter(positions[1:] * args.repeats)
    rows["another_position_same_run"] = measure(lambda: view.report(next(another), 2, 1), args.repeats)
    rows["funnel_slider"] = measure(lambda: view.funnel(positions[1], temperature=1.3, top_k=20, top_p=0.8), args.repeats)
    rows["whole_run_lens_grid"] = measure(lambda: lens_grid(view.trace, view.head, k=1), args.repeats)
    if args.backend == "torch":
        rows["attribution"] = measure(lambda: view.attribution(positions[1]), 1)

    vocab, (layers, tokens, _) = view.head.head.shape[0], view.trace.hidden.shape
    out = {
        "model": source.name, "backend": args.backend, "variant": backend.info.variant, "tokens": length,
        "layers": layers - 1, "vocab": vocab, "threads": args.threads, "load_average": os.getloadavg(),
        "grid_chunk_mb": round(GRID_CHUNK_ROWS * vocab * 4 / 1e6, 1),
        "grid_all_at_once_mb": round(layers * (tokens - 1) * vocab * 4 / 1e6, 1),
        "rss_after_loading_mb": round(loaded_mb, 1), "rows": rows, "machine": machine_description(),
    }
    print(f"{source.name} · {args.backend} {backend.info.variant} · {length}-token run · {args.threads} threads · "
          f"load average {out['load_average'][0]:.2f}")
    print(f"Resident memory after loading the model and making the run: {loaded_mb:.0f} MB")
    print("| step | median s | min s | peak RSS MB | above its start MB |\n|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name.replace('_', ' ')} | {row['seconds']:.3f} | {row['min_seconds']:.3f} | {row['peak_rss_mb']:.0f} | "
              f"{row['peak_added_mb']:.0f} |")
    print(f"Grid: {GRID_CHUNK_ROWS} rows x {vocab} logits per chunk = {out['grid_chunk_mb']} MB; all at once would be "
          f"{out['grid_all_at_once_mb']} MB.")
    for variant in filter(None, args.quantization.split(",")):
        from ..backends.onnx import OnnxBackend

        quantized = OnnxBackend(source, variant, device="cpu", threads=args.threads, progress=False)
        rows_q = Inside(result, quantized, reference.model, source.codec).quantization(reference)
        out.setdefault("quantization", {})[variant] = rows_q
        print(f"\nonnx {variant} against torch fp32 on the same {length} tokens:")
        print("| layer | relative error | logit-lens top-1 agreement |\n|---|---|---|")
        for row in rows_q:
            print(f"| {row['name']} | {row['relative_error']:.4f} | {row['top1_agreement']:.3f} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(out, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
