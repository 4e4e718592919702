"""The llama.cpp peer cell: the same model converted to GGUF (f32, Q8_0, Q4_0) and timed by llama.cpp on the same prompt.

llama.cpp runs in a subprocess of a python that has `llama-cpp-python` (`--llama-python`, default this one), so
the project's venv does not need it; the model is converted with llama.cpp's own `convert_hf_to_gguf.py` from a
llama.cpp source tree (`--llama-src`; the llama-cpp-python sdist holds one in vendor/llama.cpp). Two adjustments are
made at conversion time, on a copy of the model: config.json gains `n_ctx` (the converter reads it; transformers no
longer writes it), and the converter is told that the pre-tokenizer is GPT-2's (it recognises known vocabularies by a
hash only; `convert_to_gguf` first checks that tokenizer.json declares GPT-2's ByteLevel pre-tokenizer).

The timing mirrors the ONNX cells: the same prompt token ids, greedy (argmax of the last logits row), a fixed
number of new tokens, a warm-up, `repeats` repeats and the repeat with the median decode speed; `ttft_ms` is the
prompt's evaluation plus the first token's choice, decode tokens/s the remaining new_tokens - 1 steps.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import PlaygroundError

PEER_VARIANTS = ("f32", "Q8_0", "Q4_0")
LLAMA_FTYPES = {"Q8_0": 7, "Q4_0": 2}  # llama.h: LLAMA_FTYPE_MOSTLY_Q8_0, LLAMA_FTYPE_MOSTLY_Q4_0
HOW_TO_GET = ("llama.cpp rows skipped: install llama-cpp-python (`pip install llama-cpp-python`, in its own venv if you "
              "like) and give --llama-python PATH_TO_ITS_PYTHON --llama-src DIR (a llama.cpp source tree with "
              "convert_hf_to_gguf.py; the llama-cpp-python sdist holds one in vendor/llama.cpp).")

CONVERT = """
import runpy, sys
src = sys.argv[1]
sys.path[:0] = [src, src + "/gguf-py"]
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"  # GPT-2's ByteLevel pre-tokenizer (checked by the caller)
sys.argv = [src + "/convert_hf_to_gguf.py"] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

QUANTIZE = """
import ctypes, sys
import llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = int(sys.argv[3])
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params)))
"""

# argv[1]: JSON {gguf, windows, context, out}: every position's logits of each window (llama.cpp's own), saved to `out`.
LOGITS = """
import json, sys
import numpy as np
from llama_cpp import Llama
job = json.loads(sys.argv[1])
llm = Llama(model_path=job["gguf"], n_ctx=job["context"], n_batch=job["context"], logits_all=True, verbose=False)
rows = []
for window in job["windows"]:
    llm.reset()
    llm.eval(window)
    rows.append(np.array(llm.scores[: len(window)], dtype=np.float32))  # (T, V)
np.save(job["out"], np.stack(rows))
"""

# argv[1]: JSON {gguf, ids, new_tokens, threads, repeats, warmup, context}; prints one JSON line of timings.
TIME = """
import json, sys, time
import numpy as np
import llama_cpp
from llama_cpp import Llama
job = json.loads(sys.argv[1])
started = time.perf_counter()
llm = Llama(model_path=job["gguf"], n_ctx=job["context"], n_batch=max(len(job["ids"]), 8), n_threads=job["threads"],
            n_threads_batch=job["threads"], verbose=False)
load_s = time.perf_counter() - started
vocab = llm.n_vocab()

def greedy():
    row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(vocab,))  # (V,)
    return int(row.argmax())

def run(new_tokens):
    llm.reset()
    latencies, last = [], time.perf_counter()
    llm.eval(job["ids"])
    token = greedy()
    for step in range(new_tokens):
        now = time.perf_counter()
        latencies.append((now - last) * 1000)
        last = now
        if step + 1 < new_tokens:
            llm.eval([token])
            token = greedy()
    return latencies

for _ in range(job["warmup"]):
    run(min(job["new_tokens"], 8))
runs = [run(job["new_tokens"]) for _ in range(job["repeats"])]
# VmHWM: this process's peak RSS since exec (Linux's ru_maxrss carries the forking parent's over exec)
try:
    peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    import resource
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (1024 if sys.platform == "darwin" else 1)  # bytes there
print(json.dumps({"load_s": load_s, "runs": runs, "version": llama_cpp.__version__, "peak_rss_mb": peak_kb * 1024 / 1e6}))
"""


@dataclass(frozen=True)
class PeerConfig:
    """Where llama.cpp is: a python with llama-cpp-python, and a llama.cpp source tree for the converter."""

    python: str = sys.executable
    src: str | None = None

    @classmethod
    def from_env(cls) -> "PeerConfig":
        """PLAYGROUND_LLAMA_PYTHON / PLAYGROUND_LLAMA_SRC (the Benchmark tab reads these; the CLI has flags)."""
        return cls(os.environ.get("PLAYGROUND_LLAMA_PYTHON") or sys.executable, os.environ.get("PLAYGROUND_LLAMA_SRC") or None)


def llama_cpp_version(python: str) -> str | None:
    """llama-cpp-python's version in `python`, or None when it is not importable there."""
    try:
        done = subprocess.run([python, "-c", "import llama_cpp; print(llama_cpp.__version__)"], capture_output=True,
                              text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def missing_reason(peer: PeerConfig) -> str | None:
    """None when the peer cell can run; otherwise the one line that says how to get llama.cpp."""
    if not peer.src or not (Path(peer.src) / "convert_hf_to_gguf.py").is_file():
        return HOW_TO_GET
    if llama_cpp_version(peer.python) is None:
        return HOW_TO_GET
    return None


def convert_to_gguf(model_dir: Path, llama_src: Path, out: Path, outtype: str = "f32") -> None:
    """The Hugging Face model folder as a GGUF file, by llama.cpp's own converter (run with this python)."""
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    pre = tokenizer.get("pre_tokenizer") or {}
    if pre.get("type") != "ByteLevel" or not pre.get("use_regex") or pre.get("add_prefix_space"):
        raise PlaygroundError(key="bench.peer_tokenizer", model=model_dir.name, type=pre.get("type") or "none")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / model_dir.name
        shutil.copytree(model_dir, copy)
        config = json.loads((copy / "config.json").read_text())
        config.setdefault("n_ctx", config["n_positions"])
        (copy / "config.json").write_text(json.dumps(config))
        done = subprocess.run([sys.executable, "-c", CONVERT, str(llama_src), str(copy), "--outfile", str(out), "--outtype", outtype],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise PlaygroundError(key="bench.peer_convert", model=model_dir.name, error=done.stderr.strip()[-500:])


def _fingerprint(model_dir: Path) -> dict:
    return {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(model_dir.iterdir()) if p.is_file()}


def refresh_folder(model_dir: Path, folder: Path) -> None:
    """Make `folder` hold conversions of the model as its files are now: what was converted from an earlier version
    of the model is removed, and the model's fingerprint is stamped."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp, fingerprint = folder / "source.json", _fingerprint(model_dir)
    if stamp.is_file() and json.loads(stamp.read_text()) != fingerprint:
        for old in folder.iterdir():
            if old != stamp:
                shutil.rmtree(old) if old.is_dir() else old.unlink()
    stamp.write_text(json.dumps(fingerprint))


# argv[1:]: distribution names; prints the first one's version, or exits 1 when one is not installed. Read from the
# packages' metadata, not imported: importing optimum-intel takes seconds.
INSTALLED = """
import sys
from importlib.metadata import PackageNotFoundError, version
try:
    print([version(name) for name in sys.argv[1:]][0])
except PackageNotFoundError:
    sys.exit(1)
"""


def installed_version(python: str, *names: str) -> str | None:
    """The version of `names[0]` in `python` when every one of `names` is installed there, else None."""
    try:
        done = subprocess.run([python, "-c", INSTALLED, *names], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def convert_in_subprocess(python: str, script: str, job: dict, *, error_key: str, model: str) -> None:
    """Run a peer's conversion `script` in `python` with `job` (JSON in argv[1]); its failure as `error_key`."""
    done = subprocess.run([python, "-c", script, json.dumps(job)], capture_output=True, text=True)
    if done.returncode != 0:
        raise PlaygroundError(key=error_key, model=model, error=done.stderr.strip()[-500:])


def time_in_subprocess(python: str, script: str, job: dict, *, error_key: str, file: str) -> dict:
    """Run a peer's timing `script` in `python` with `job` (JSON in argv[1]); its last stdout line, as JSON."""
    done = subprocess.run([python, "-c", script, json.dumps(job)], capture_output=True, text=True)
    if done.returncode != 0:
        raise PlaygroundError(key=error_key, file=file, error=done.stderr.strip()[-500:])
    return json.loads(done.stdout.strip().splitlines()[-1])


# The peak-RSS lines every peer's timing script ends with (the peer process's own peak, as `peak_kb`).
PEAK_RSS = """
# VmHWM: this process's peak RSS since exec (Linux's ru_maxrss carries the forking parent's over exec)
try:
    peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    import resource
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (1024 if sys.platform == "darwin" else 1)  # bytes there
"""


def ensure_gguf(model_dir: Path, peer: PeerConfig, variant: str, folder: Path) -> Path:
    """The model as `folder/<variant>.gguf`, converted (f32) or quantized from it on first use, reused while the
    model's files are unchanged."""
    refresh_folder(model_dir, folder)
    f32 = folder / "f32.gguf"
    if not f32.is_file():
        convert_to_gguf(model_dir, Path(peer.src), f32.with_suffix(".tmp"))
        f32.with_suffix(".tmp").rename(f32)
    if variant == "f32":
        return f32
    out = folder / f"{variant}.gguf"
    if not out.is_file():
        done = subprocess.run([peer.python, "-c", QUANTIZE, str(f32), str(out.with_suffix(".tmp")), str(LLAMA_FTYPES[variant])],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise PlaygroundError(key="bench.peer_quantize", variant=variant, error=done.stderr.strip()[-500:])
        out.with_suffix(".tmp").rename(out)
    return out


def peer_row(runs: list[list[float]], *, variant: str, version: str, prompt_tokens: int, new_tokens: int, threads: int,
             load_s: float, peak_rss_mb: float, size_mb: float, backend: str = "llama.cpp",
             package: str = "llama-cpp-python") -> dict:
    """One peer's row (llama.cpp's unless `backend` says otherwise; its provider is `package version`) from its repeats'
    per-step latencies (ms, the first being the prompt's and the first token's), shaped like the engine's rows: the
    repeat with the median decode speed; no quality columns (not measured for a peer)."""
    import statistics

    import numpy as np

    speeds = [(len(lat) - 1) / (sum(lat[1:]) / 1000) for lat in runs]
    chosen = runs[speeds.index(statistics.median_low(speeds))]
    latencies, decode_s = chosen[1:], sum(chosen[1:]) / 1000
    return {
        "backend": backend, "variant": variant, "device": "cpu", "provider": f"{package} {version}",
        "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "batch": 1, "threads": threads, "repeats": len(runs),
        "load_s": round(load_s, 2), "ttft_ms": round(chosen[0], 2), "decode_s": round(decode_s, 6),
        "decode_tokens_per_s": round(len(latencies) / decode_s, 2), "per_sequence_tokens_per_s": round(len(latencies) / decode_s, 2),
        "latency_p50_ms": round(float(np.percentile(latencies, 50)), 2), "latency_p90_ms": round(float(np.percentile(latencies, 90)), 2),
        "eval_tokens_per_s": None,  # not measured for a peer: it is the Evaluate tab's scoring, ours alone
        "peak_rss_mb": round(peak_rss_mb, 1), "gpu_peak_mb": None, "size_mb": round(size_mb, 1),
        "quality_meaningful": False, "top1_agreement": None, "max_abs_logit_diff": None, "perplexity": None,
    }


def run_peer(model_dir: Path, peer: PeerConfig, prompt_ids: list[int], new_tokens: int, threads: int, repeats: int,
             warmup: int, context: int, folder: Path, variants=PEER_VARIANTS) -> list[dict]:
    """llama.cpp rows (one per variant) for the same prompt ids, new tokens and threads as the engine's cells."""
    rows = []
    for variant in variants:
        gguf = ensure_gguf(model_dir, peer, variant, folder)
        job = {"gguf": str(gguf), "ids": list(prompt_ids), "new_tokens": new_tokens, "threads": threads, "repeats": repeats,
               "warmup": warmup, "context": context}
        done = subprocess.run([peer.python, "-c", TIME, json.dumps(job)], capture_output=True, text=True)
        if done.returncode != 0:
            raise PlaygroundError(key="bench.peer_run", file=gguf.name, error=done.stderr.strip()[-500:])
        result = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(peer_row(result["runs"], variant=variant, version=result["version"], prompt_tokens=len(prompt_ids),
                             new_tokens=new_tokens, threads=threads, load_s=result["load_s"],
                             peak_rss_mb=result["peak_rss_mb"], size_mb=gguf.stat().st_size / 1e6))
    return rows


def peer_logits(model_dir: Path, peer: PeerConfig, variant: str, windows: list[list[int]], context: int, folder: Path):
    """llama.cpp's logits for every position of each window (same length each) with the model as `variant`:
    (numpy (windows, T, V), the GGUF file's size in bytes). For comparing its quantizations with ours
    (scripts/quant_quality.py)."""
    import numpy as np

    gguf = ensure_gguf(model_dir, peer, variant, folder)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "logits.npy"
        job = {"gguf": str(gguf), "windows": windows, "context": context, "out": str(out)}
        done = subprocess.run([peer.python, "-c", LOGITS, json.dumps(job)], capture_output=True, text=True)
        if done.returncode != 0:
            raise PlaygroundError(key="bench.peer_eval", file=gguf.name, error=done.stderr.strip()[-500:])
        return np.load(out), gguf.stat().st_size
