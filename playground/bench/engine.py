"""The benchmark engine: backend x variant x provider cells x batch sizes, timed through the playground's own decoding loop.

    python -m playground.bench --model random:gpt2 --prompt-tokens 32 --new-tokens 128 --batch-sizes 1 4 8 16 --json bench.json

Every cell decodes greedily for a fixed number of tokens (no early stop) from a prompt of exactly
N tokens, after a warm-up, `repeats` times, at each batch size (B continuations of the prompt
stepped together: one prefill, then B tokens per step); the row reported is the repeat with the
median decode speed, so its numbers agree with each other. Aggregate tokens/s counts the tokens of
all B sequences, per-sequence tokens/s one sequence's. One thread count for all cells. Printing and
storing are the callers' job (the CLI below, the Benchmark tab).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import GenerationSettings
from ..errors import PlaygroundError
from ..generation import Generation, check_num_samples
from ..machine import machine_description
from ..models import RANDOM_PREFIX, ModelSource, source_files

REFERENCE_TEXT = (
    "A function definition defines a user-defined function object. The function definition does not execute the "
    "function body; this gets executed only when the function is called. When a function is called, the arguments "
    "are bound to the parameters, and the return value of the function is the value of the expression after the "
    "return statement, or None if the function ends without one. Exceptions raised in the body propagate to the caller."
)
JSON_KEYS = ("backend", "variant", "provider", "prompt_tokens", "new_tokens", "batch", "ttft_ms", "decode_tokens_per_s",
             "per_sequence_tokens_per_s", "latency_p50_ms", "latency_p90_ms", "eval_tokens_per_s", "peak_rss_mb", "size_mb",
             "top1_agreement")


@dataclass(frozen=True)
class Cell:
    backend: str  # torch, onnx
    variant: str  # fp32, fp16, int8, int4
    device: str  # cpu, cuda

    @property
    def label(self) -> str:
        return f"{self.backend} {self.variant} ({self.device})"


def available_cells() -> list[Cell]:
    """Every cell this machine can run: the CPU ones always, the CUDA ones when a GPU is usable."""
    import torch

    from ..onnx.runtime import cuda_provider_available

    cells = [Cell("torch", "fp32", "cpu"), Cell("onnx", "fp32", "cpu"), Cell("onnx", "int8", "cpu"), Cell("onnx", "int4", "cpu")]
    if torch.cuda.is_available():
        cells.append(Cell("torch", "fp16", "cuda"))
        if cuda_provider_available():
            cells += [Cell("onnx", "fp16", "cuda"), Cell("onnx", "fp32", "cuda"), Cell("onnx", "int4", "cuda")]
    return cells


def parse_cells(spec: str | None) -> list[Cell]:
    """'torch:fp32,onnx:int8' (device optional, 'onnx:fp16:cuda') -> the matching available cells."""
    available = available_cells()
    if not spec:
        return available
    chosen = []
    for item in spec.split(","):
        parts = item.strip().split(":")
        matches = [c for c in available if c.backend == parts[0] and (len(parts) < 2 or c.variant == parts[1])
                   and (len(parts) < 3 or c.device == parts[2])]
        if not matches:
            raise PlaygroundError(key="bench.no_cell", cell=item, available=", ".join(c.label for c in available))
        chosen += [c for c in matches if c not in chosen]
    return chosen


class PeakMemory:
    """Peak resident memory of this process while a block runs.

    On Linux the kernel keeps the peak (VmHWM) and resets it on request (`/proc/self/clear_refs`), so
    nothing runs beside the timed loop. Elsewhere a thread samples the RSS every 100 ms. (A thread
    sampling every 5 ms, as before, took the GIL once a step: int4 decode 217.1 against 220.8 tokens/s
    without it, 6 alternating pairs.)
    """

    STATUS, CLEAR = Path("/proc/self/status"), Path("/proc/self/clear_refs")

    def __init__(self):
        import psutil

        self._process = psutil.Process()
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = None

    def _kernel_peak(self) -> int | None:
        try:
            for line in self.STATUS.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
        except OSError:
            pass
        return None

    def __enter__(self):
        self.peak_rss = self._process.memory_info().rss
        try:
            self.CLEAR.write_text("5")  # reset the kernel's peak to the current RSS
            self._kernel = self._kernel_peak() is not None
        except OSError:
            self._kernel = False
        if not self._kernel:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.1):
            self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        peak = self._kernel_peak() if self._kernel else None
        self.peak_rss = max(self.peak_rss, peak or 0, self._process.memory_info().rss)


@dataclass
class BenchConfig:
    prompt_tokens: list[int] = field(default_factory=lambda: [32])
    new_tokens: list[int] = field(default_factory=lambda: [128])
    repeats: int = 3
    warmup: int = 1
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)


def _prompt_ids(source: ModelSource, n: int) -> list[int]:
    ids = source.tokenizer(REFERENCE_TEXT * (1 + n // 20))["input_ids"]
    return ids[:n]


def _timed_run(backend, source, prompt_ids: list[int], new_tokens: int, batch: int = 1) -> tuple[float, list[float]]:
    """(time to first token in ms, per-step latencies in ms of the rest), timing each step of the real loop.

    A step yields one record per sequence of the batch, sample 0's first: the step's time is taken there.
    """
    run = Generation(backend, source, "", GenerationSettings(max_new_tokens=new_tokens, do_sample=False),
                     ignore_eos=True, prompt_ids=prompt_ids, num_samples=batch)
    latencies = []
    last = time.perf_counter()
    for sample, _ in run.samples():
        if sample == 0:
            now = time.perf_counter()
            latencies.append((now - last) * 1000)
            last = now
    return latencies[0], latencies[1:]


def _quality(backend, reference_logits: np.ndarray, ids: list[int]) -> dict:
    logits, _ = backend.prefill(ids)
    logits = logits.numpy()  # (T, V)
    logprobs = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    nll = -logprobs[np.arange(len(ids) - 1), ids[1:]].mean()
    return {
        "top1_agreement": round(float((logits.argmax(-1) == reference_logits.argmax(-1)).mean()), 4),
        "max_abs_logit_diff": round(float(np.abs(logits - reference_logits).max()), 5),
        "perplexity": round(float(math.exp(nll)), 3),
    }


EVAL_REPEATS = 3


def _evaluation_speed(backend, ids: list[int]) -> float:
    """Tokens scored per second as the Evaluate tab scores them (evaluate.scoring.score_stream: one window of `ids` through
    `prefill`, then each token's log-probability), the median of EVAL_REPEATS."""
    from ..evaluate.scoring import score_stream
    from ..evaluate.windows import sliding_windows

    windows = sliding_windows(len(ids), len(ids), len(ids))
    speeds = []
    for _ in range(EVAL_REPEATS):
        scores = score_stream(backend, ids, windows)
        speeds.append(scores.tokens / scores.seconds)
    return round(statistics.median(speeds), 1)


def _size_mb(backend, source: ModelSource) -> float:
    manifest = getattr(backend, "manifest", None)
    if manifest is not None:
        from ..onnx.export import HEAD_FILE, MODEL_FILE, PROMPT_FILE

        # The graphs a run loads: the decoder, the prompt's (onnx/prompt.py) and the head (onnx/head.py); not the
        # analysis graph, which only the Inside tab loads.
        loaded = (MODEL_FILE, PROMPT_FILE, HEAD_FILE)
        return round(sum(f["bytes"] for name, f in manifest["files"].items() if name in loaded) / 1e6, 1)

    return round(sum(p.stat().st_size for p in source_files(source) if p.suffix == ".safetensors") / 1e6, 1)


def make_backend(cell: Cell, source: ModelSource, threads: int, exports_root: Path | None):
    if cell.backend == "torch":
        from ..backends.torch import TorchBackend

        return TorchBackend(source, cell.device)
    from ..backends.onnx import OnnxBackend

    return OnnxBackend(source, cell.variant, cell.device, exports_root=exports_root, threads=threads)


def run_benchmark(source: ModelSource, cells: list[Cell], config: BenchConfig, exports_root: Path | None = None,
                  on_row: Callable[[dict], None] | None = None, progress: bool = True) -> list[dict]:
    """Measure every cell at every (prompt, new tokens) size; rows come back (and to `on_row`) as they finish.

    Ctrl-C stops the run and returns the rows finished so far.
    """
    import torch
    from tqdm.auto import tqdm

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)  # given back at the end: the app (a Benchmark tab run) goes on with its own
    quality_meaningful = not source.requested.startswith(RANDOM_PREFIX)
    reference_ids = source.tokenizer(REFERENCE_TEXT)["input_ids"]
    reference_logits = None
    rows: list[dict] = []
    sizes = [(p, n, b) for p in config.prompt_tokens for n in config.new_tokens for b in config.batch_sizes]
    bar = tqdm(total=len(cells) * len(sizes), desc="Benchmark", unit="cell", disable=not progress)
    try:
        for cell in cells:
            bar.set_postfix_str(f"loading {cell.label}")
            started = time.perf_counter()
            backend = make_backend(cell, source, config.threads, exports_root)
            load_s = time.perf_counter() - started
            if reference_logits is None:  # the first cell is PyTorch fp32 when asked for; build the reference once
                from ..backends.torch import TorchBackend

                reference = backend if (cell.backend, cell.variant, cell.device) == ("torch", "fp32", "cpu") else TorchBackend(source, "cpu")
                reference_ids = reference_ids[: reference.info.context_length]
                reference_logits = reference.prefill(reference_ids)[0].numpy()
                # Only its logits are kept: a cell's figures (speed, peak RSS) must not depend on what else the run
                # loaded. Kept loaded, it slowed the ONNX cells after it by 13% (int4 174.8 -> 201.6 tokens/s), through
                # the loop's per-step torch.set_num_threads waking its thread pool (now done only when torch computes).
                del reference
                gc.collect()
            quality = _quality(backend, reference_logits, reference_ids)
            eval_tokens_per_s = _evaluation_speed(backend, reference_ids)
            for prompt_tokens, new_tokens, batch in sizes:
                bar.set_postfix_str(f"{cell.label} {prompt_tokens}+{new_tokens} x{batch}")
                ids = _prompt_ids(source, prompt_tokens)
                if len(ids) + new_tokens > backend.info.context_length:
                    raise PlaygroundError(key="bench.context", prompt_tokens=prompt_tokens, new_tokens=new_tokens,
                                          context=backend.info.context_length)
                for _ in range(config.warmup):
                    _timed_run(backend, source, ids, min(new_tokens, 8), batch)
                repeats = []
                with PeakMemory() as memory:
                    for _ in range(config.repeats):
                        repeats.append(_timed_run(backend, source, ids, new_tokens, batch))
                # The first decoding step also scores the prompt's positions before its last (the first token comes
                # first: batching.py's _join); decode speed is taken from the steps after it, and that work is its own
                # column: the second token's latency beyond a median step.
                repeats = [(ttft, lat[0], lat[1:]) if len(lat) > 1 else (ttft, None, lat) for ttft, lat in repeats]
                # The repeat with the median decode speed, so its numbers agree with each other.
                speeds = [len(lat) / (sum(lat) / 1000) for _, _, lat in repeats]
                ttft_ms, second_ms, latencies = repeats[speeds.index(statistics.median_low(speeds))]
                decode_s = sum(latencies) / 1000
                row = {
                    "backend": cell.backend, "variant": cell.variant, "device": cell.device, "provider": backend.info.provider,
                    "prompt_tokens": len(ids), "new_tokens": new_tokens, "batch": batch, "threads": config.threads,
                    "repeats": config.repeats, "load_s": round(load_s, 2), "ttft_ms": round(ttft_ms, 2), "decode_s": round(decode_s, 6),
                    # Aggregate: the tokens of all `batch` sequences; per sequence: one sequence's (a step's rate).
                    "decode_tokens_per_s": round(batch * len(latencies) / decode_s, 2),
                    "per_sequence_tokens_per_s": round(len(latencies) / decode_s, 2),
                    "prompt_scoring_ms": None if second_ms is None else round(max(0.0, second_ms - float(np.median(latencies))), 2),
                    "latency_p50_ms": round(float(np.percentile(latencies, 50)), 2),
                    "latency_p90_ms": round(float(np.percentile(latencies, 90)), 2),
                    "peak_rss_mb": round(memory.peak_rss / 1e6, 1),  # whole process: includes the PyTorch reference model
                    "gpu_peak_mb": round(torch.cuda.max_memory_allocated() / 1e6, 1) if cell.device == "cuda" else None,
                    "size_mb": _size_mb(backend, source),
                    "eval_tokens_per_s": eval_tokens_per_s,  # the cell's, at any size: the reference text scored as Evaluate does
                    "quality_meaningful": quality_meaningful, **quality,
                }
                rows.append(row)
                if on_row:
                    on_row(row)
                bar.update()
            # Release this cell's model before the next one, so peak RSS is this cell's, not the run's so far.
            del backend
            gc.collect()
    except KeyboardInterrupt:
        print(f"\nInterrupted: keeping the {len(rows)} finished rows.", file=sys.stderr)
    finally:
        bar.close()
        torch.set_num_threads(previous_threads)
    add_speedups(rows)
    return rows


def _peer_cells(source: ModelSource, config: BenchConfig, kind: str, variants, run_one, on_row,
                failed: list | None) -> list[dict]:
    """A peer's rows at every (prompt, new tokens) size of `config` and each of its `variants`: `run_one(model_dir,
    prompt_ids, new_tokens, context, folder, variants)` gives one size's rows, converting the model into `folder`
    (exports/<model>/<kind>) on first use, all its variants in one go. A variant that fails (its conversion, or a
    crash) is found by running them one at a time, left out of the sizes after it and added to `failed` as (variant,
    PlaygroundError): the other variants' rows and ours still come."""
    from transformers import AutoConfig

    context = AutoConfig.from_pretrained(source.location).n_positions
    model_dir, rows, broken = Path(source.location).resolve(), [], set()
    for prompt_tokens in config.prompt_tokens:
        for new_tokens in config.new_tokens:
            ids, todo = _prompt_ids(source, prompt_tokens), tuple(v for v in variants if v not in broken)
            if not todo:
                continue
            try:
                got = run_one(model_dir, ids, new_tokens, context, kind, todo)
            except PlaygroundError:
                if failed is None:
                    raise
                got = []
                for variant in todo:  # which of them fails
                    try:
                        got += run_one(model_dir, ids, new_tokens, context, kind, (variant,))
                    except PlaygroundError as exc:
                        broken.add(variant)
                        failed.append((variant, exc))
            for row in got:
                rows.append(row)
                if on_row:
                    on_row(row)
    return rows


def run_peer_cells(source: ModelSource, config: BenchConfig, peer, exports_root: Path | None = None,
                   on_row: Callable[[dict], None] | None = None, failed: list | None = None) -> tuple[list[dict], str | None]:
    """llama.cpp rows (f32, Q8_0, Q4_0 at batch 1) for the same prompts, new tokens, repeats and threads as the cells,
    or no rows and the one line that says how to get llama.cpp (`peer` is a `peers.PeerConfig`). With a `failed` list,
    a variant that fails goes there (see `_peer_cells`) instead of ending the benchmark."""
    from ..onnx.export import export_folder
    from .peers import PEER_VARIANTS, missing_reason, run_peer

    reason = missing_reason(peer)
    if reason is not None:
        return [], reason
    return _peer_cells(source, config, "gguf", PEER_VARIANTS, lambda model_dir, ids, new, context, kind, variants: run_peer(
        model_dir, peer, ids, new, config.threads, config.repeats, config.warmup, context,
        export_folder(source, kind, exports_root), variants), on_row, failed), None


def run_ct2_cells(source: ModelSource, config: BenchConfig, python: str | None, exports_root: Path | None = None,
                  on_row: Callable[[dict], None] | None = None, failed: list | None = None) -> tuple[list[dict], str | None]:
    """CTranslate2 rows (float32, int8_float32, int8 at batch 1) run by `python`, as `run_peer_cells`'s, or no rows and
    the line that says how to get it."""
    from ..onnx.export import export_folder
    from .peer_ct2 import CT2_VARIANTS, missing_reason, run_ct2

    reason = missing_reason(python)
    if reason is not None:
        return [], reason
    return _peer_cells(source, config, "ct2", CT2_VARIANTS, lambda model_dir, ids, new, context, kind, variants: run_ct2(
        model_dir, python, ids, new, config.threads, config.repeats, config.warmup,
        export_folder(source, kind, exports_root), variants), on_row, failed), None


def run_openvino_cells(source: ModelSource, config: BenchConfig, python: str | None, exports_root: Path | None = None,
                       on_row: Callable[[dict], None] | None = None, failed: list | None = None) -> tuple[list[dict], str | None]:
    """OpenVINO rows (fp32, int8, int4 weight compression at batch 1) run by `python` (its own venv), as
    `run_peer_cells`'s, or no rows and the line that says how to set it up."""
    from ..onnx.export import export_folder
    from .peer_openvino import OPENVINO_VARIANTS, missing_reason, run_openvino

    reason = missing_reason(python)
    if reason is not None:
        return [], reason
    return _peer_cells(source, config, "openvino", OPENVINO_VARIANTS, lambda model_dir, ids, new, context, kind, variants:
                       run_openvino(model_dir, python, ids, new, config.threads, config.repeats, config.warmup,
                                    export_folder(source, kind, exports_root), variants), on_row, failed), None


@dataclass(frozen=True)
class PeerPythons:
    """Which peers to run and where: llama.cpp's `peers.PeerConfig`, the pythons with CTranslate2 and with OpenVINO
    (None: not set up, so its row is skipped with the line saying how; False: not asked for)."""

    llama: object = False
    ct2: str | None | bool = False
    openvino: str | None | bool = False

    @classmethod
    def from_env(cls) -> "PeerPythons":
        """Every peer, where PLAYGROUND_LLAMA_PYTHON / _LLAMA_SRC, PLAYGROUND_CT2_PYTHON (default this python) and
        PLAYGROUND_OPENVINO_PYTHON point (the Benchmark tab reads these; the CLI has flags)."""
        from .peers import PeerConfig

        return cls(PeerConfig.from_env(), os.environ.get("PLAYGROUND_CT2_PYTHON") or sys.executable,
                   os.environ.get("PLAYGROUND_OPENVINO_PYTHON") or None)


def run_all_peers(source: ModelSource, config: BenchConfig, peers: PeerPythons, exports_root: Path | None = None,
                  on_row: Callable[[dict], None] | None = None) -> tuple[list[dict], dict[str, str], list[tuple]]:
    """Every peer's rows that `peers` asks for (llama.cpp, CTranslate2, OpenVINO, in that order); for each asked-for
    peer that is not here, by name, the line that says how to get it; and each peer variant that failed, as
    (peer, variant, PlaygroundError): its rows are left out, the rest of the benchmark still comes."""
    rows, missing, failed = [], {}, []
    for name, wanted, run in (
            ("llama.cpp", peers.llama, lambda out: run_peer_cells(source, config, peers.llama, exports_root, on_row, out)),
            ("CTranslate2", peers.ct2, lambda out: run_ct2_cells(source, config, peers.ct2, exports_root, on_row, out)),
            ("OpenVINO", peers.openvino,
             lambda out: run_openvino_cells(source, config, peers.openvino, exports_root, on_row, out))):
        if wanted is False:
            continue
        failures: list = []
        peer_rows, note = run(failures)
        rows += peer_rows
        failed += [(name, variant, exc) for variant, exc in failures]
        if note:
            missing[name] = note
    return rows, missing, failed


def add_speedups(rows: list[dict]) -> None:
    """Each row's aggregate decode speed relative to PyTorch fp32 on the CPU at the same sizes and batch, and relative
    to its own cell at batch 1 (None where that was not measured)."""
    base = {(r["prompt_tokens"], r["new_tokens"], r.get("batch", 1)): r["decode_tokens_per_s"] for r in rows
            if (r["backend"], r["variant"], r["device"]) == ("torch", "fp32", "cpu")}
    single = {(r["backend"], r["variant"], r["device"], r["prompt_tokens"], r["new_tokens"]): r["decode_tokens_per_s"]
              for r in rows if r.get("batch", 1) == 1}
    for r in rows:
        reference = base.get((r["prompt_tokens"], r["new_tokens"], r.get("batch", 1)))
        r["speedup_vs_torch_fp32"] = round(r["decode_tokens_per_s"] / reference, 2) if reference else None
        alone = single.get((r["backend"], r["variant"], r["device"], r["prompt_tokens"], r["new_tokens"]))
        r["speedup_vs_batch_1"] = round(r["decode_tokens_per_s"] / alone, 2) if alone else None


def markdown_table(rows: list[dict]) -> str:
    head = ("| cell | provider | prompt+new | batch | TTFT ms | aggregate tok/s | per-seq tok/s | vs batch 1 | speed-up | "
            "p50 ms | p90 ms | eval tok/s | RSS MB | size MB | top-1 |")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in rows:
        quality = f"{r['top1_agreement']:.3f}" if r["quality_meaningful"] else "n/m" if r.get("top1_agreement") is not None else "-"
        speedup = f"{r['speedup_vs_torch_fp32']:.2f}×" if r.get("speedup_vs_torch_fp32") else "-"
        vs_one = f"{r['speedup_vs_batch_1']:.2f}×" if r.get("speedup_vs_batch_1") else "-"
        evaluation = f"{r['eval_tokens_per_s']:.0f}" if r.get("eval_tokens_per_s") else "-"
        lines.append(f"| {r['backend']} {r['variant']} | {r['provider']} | {r['prompt_tokens']}+{r['new_tokens']} | {r.get('batch', 1)} | "
                     f"{r['ttft_ms']:.1f} | {r['decode_tokens_per_s']:.1f} | {r.get('per_sequence_tokens_per_s', r['decode_tokens_per_s']):.1f} | "
                     f"{vs_one} | {speedup} | {r['latency_p50_ms']:.2f} | {r['latency_p90_ms']:.2f} | {evaluation} | "
                     f"{r['peak_rss_mb']:.0f} | {r['size_mb']:.1f} | {quality} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from ..history import open_history
    from ..models import resolve_model

    parser = argparse.ArgumentParser(prog="python -m playground.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:gpt2", help="hub id, folder, demo, or random:gpt2 / random:distilgpt2 / random:gpt2-medium")
    parser.add_argument("--cells", default=None, help="e.g. torch:fp32,onnx:int8 (default: every cell this machine can run)")
    parser.add_argument("--prompt-tokens", type=int, nargs="+", default=[32])
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[128])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1], help="sequences stepped together, e.g. 1 4 8 16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for every cell (default: all cores)")
    parser.add_argument("--json", type=Path, default=None, help="write the rows (and the machine) as JSON")
    parser.add_argument("--llama-python", default=sys.executable,
                        help="a python with llama-cpp-python, for the llama.cpp rows (default: this one)")
    parser.add_argument("--llama-src", default=None, help="a llama.cpp source tree holding convert_hf_to_gguf.py (for the llama.cpp rows)")
    parser.add_argument("--no-llama", action="store_true", help="skip the llama.cpp rows")
    parser.add_argument("--ct2-python", default=sys.executable,
                        help="a python with ctranslate2 and transformers, for the CTranslate2 rows (default: this one)")
    parser.add_argument("--no-ct2", action="store_true", help="skip the CTranslate2 rows")
    parser.add_argument("--openvino-python", default=None,
                        help="the python of a venv with optimum-intel, openvino and nncf, for the OpenVINO rows (docs/benchmark.md)")
    parser.add_argument("--no-openvino", action="store_true", help="skip the OpenVINO rows")
    parser.add_argument("--db", default=None, help="history database to add a bench table to (default: the app's)")
    args = parser.parse_args(argv)
    try:
        source = resolve_model(args.model)
        cells = parse_cells(args.cells)
        for batch in args.batch_sizes:
            check_num_samples(batch)
        config = BenchConfig(args.prompt_tokens, args.new_tokens, args.repeats, threads=args.threads, batch_sizes=args.batch_sizes)
        print(f"Benchmark of {source.name} on {len(cells)} cells, {config.threads} threads, {config.repeats} repeats, greedy, fixed length",
              file=sys.stderr)
        rows = run_benchmark(source, cells, config)
        from .peers import PeerConfig

        peers = PeerPythons(False if args.no_llama else PeerConfig(args.llama_python, args.llama_src),
                            False if args.no_ct2 else args.ct2_python, False if args.no_openvino else args.openvino_python)
        peer_rows, missing, failed = run_all_peers(source, config, peers)
        rows += peer_rows
        add_speedups(rows)
    except PlaygroundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    machine = machine_description()
    print(markdown_table(rows))
    for note in missing.values():
        print(f"\n{note}")
    for name, variant, exc in failed:
        print(f"\n{name} {variant}: left out, it failed: {exc}")
    if source.requested.startswith(RANDOM_PREFIX):
        print("\nRandom weights: quality columns are not meaningful (n/m).")
    if args.json:
        args.json.write_text(json.dumps({"model": source.name, "machine": machine, "rows": rows}, indent=2))
        print(f"Rows written to {args.json}", file=sys.stderr)
    store, why = open_history(args.db)
    if store is not None:
        store.save_bench(rows, source.name, machine)
    else:
        print(f"Results not stored: {why}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
