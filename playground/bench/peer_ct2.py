"""The CTranslate2 peer cell: the same model converted by CTranslate2's own converter and timed by its generator.

CTranslate2 runs in a subprocess of a python that has `ctranslate2` (`--ct2-python`, default this one: it installs
beside the project's pins, `pip install -e ".[peers]"`), so its OpenMP runtime and memory are its own, as
llama.cpp's are. The model is converted from the same local folder by `ctranslate2.converters.TransformersConverter`
once per variant (the weights stored as the variant asks, so the file's size is the variant's), and loaded with the
same compute type:

- float32: float32 weights and compute;
- int8_float32: int8 weights (per output channel), int8 GEMMs, the rest in float32;
- int8: CTranslate2's "int8" (on a CPU the same kernels as int8_float32; kept to show that).

The timing mirrors the ONNX cells: the same prompt token ids (as the model's own vocabulary strings, its
vocabulary.json, so the ids are exact), greedy (`sampling_topk=1`), exactly `new_tokens` new tokens
(`end_token=[]`: it neither stops at nor suppresses the end of text, as the bench's `ignore_eos`), `intra_threads`
= the bench's threads, a warm-up and `repeats` repeats, the repeat with the median decode speed. The tokens are
streamed (`generate_tokens`), so the time to first token is the prompt's evaluation and the first token's choice
as the caller sees it, and each later token's latency is the step's.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ..errors import PlaygroundError
from .peers import PEAK_RSS, installed_version, peer_row, refresh_folder, time_in_subprocess

BACKEND = "CTranslate2"
CT2_VARIANTS = ("float32", "int8_float32", "int8")
HOW_TO_GET = ("CTranslate2 rows skipped: install it beside the project (`pip install -e \".[peers]\"`, ctranslate2 4.8.5), "
              "or give --ct2-python PATH_TO_A_PYTHON_WITH_CTRANSLATE2_AND_TRANSFORMERS.")

# argv[1]: JSON {model, out, variants}: the model folder converted into out/<variant>/ for each variant.
CONVERT = """
import json, sys
from ctranslate2.converters import TransformersConverter
job = json.loads(sys.argv[1])
for variant in job["variants"]:
    TransformersConverter(job["model"]).convert(job["out"] + "/" + variant + ".tmp", quantization=variant, force=True)
"""

# argv[1]: JSON {model, compute_type, ids, new_tokens, threads, repeats, warmup}; prints one JSON line of timings.
TIME = """
import json, sys, time
import ctranslate2
job = json.loads(sys.argv[1])
started = time.perf_counter()
generator = ctranslate2.Generator(job["model"], device="cpu", compute_type=job["compute_type"], intra_threads=job["threads"],
                                  inter_threads=1)
load_s = time.perf_counter() - started
vocabulary = json.load(open(job["model"] + "/vocabulary.json"))  # id -> token string, the converter's own
prompt = [vocabulary[i] for i in job["ids"]]

def run(new_tokens):
    latencies, tokens, last = [], [], time.perf_counter()
    for step in generator.generate_tokens(prompt, max_length=new_tokens, sampling_topk=1, end_token=[]):
        now = time.perf_counter()
        latencies.append((now - last) * 1000)
        tokens.append(step.token_id)
        last = now
    return latencies, tokens

for _ in range(job["warmup"]):
    run(min(job["new_tokens"], 8))
runs = [run(job["new_tokens"]) for _ in range(job["repeats"])]
""" + PEAK_RSS + """
print(json.dumps({"load_s": load_s, "runs": [r[0] for r in runs], "tokens": runs[-1][1], "version": ctranslate2.__version__,
                  "peak_rss_mb": peak_kb * 1024 / 1e6}), flush=True)
del generator  # released before the interpreter's exit, which otherwise aborts now and then in std::terminate (4.8.5)
"""


def missing_reason(python: str | None) -> str | None:
    """None when the CTranslate2 cells can run in `python` (it has ctranslate2, and transformers for the converter);
    otherwise the one line that says how to get it."""
    return HOW_TO_GET if python is None or installed_version(python, "ctranslate2", "transformers") is None else None


def ensure_ct2(model_dir: Path, python: str, variants, folder: Path) -> dict[str, Path]:
    """The model as `folder/<variant>/` (a CTranslate2 model) for each variant, converted on first use, reused while
    the model's files are unchanged."""
    refresh_folder(model_dir, folder)
    todo = [v for v in variants if not (folder / v / "model.bin").is_file()]
    if todo:
        job = {"model": str(model_dir), "out": str(folder), "variants": todo}
        done = subprocess.run([python, "-c", CONVERT, json.dumps(job)], capture_output=True, text=True)
        if done.returncode != 0:
            raise PlaygroundError(key="bench.ct2_convert", model=model_dir.name, error=done.stderr.strip()[-500:])
        for variant in todo:
            (folder / f"{variant}.tmp").rename(folder / variant)
    return {v: folder / v for v in variants}


def time_ct2(model: Path, python: str, compute_type: str, prompt_ids: list[int], new_tokens: int, threads: int,
             repeats: int, warmup: int) -> dict:
    """CTranslate2's timings of one converted model: {load_s, runs (per-step ms, each run), tokens (the last run's
    greedy ids), version, peak_rss_mb}."""
    job = {"model": str(model), "compute_type": compute_type, "ids": list(prompt_ids), "new_tokens": new_tokens,
           "threads": threads, "repeats": repeats, "warmup": warmup}
    return time_in_subprocess(python, TIME, job, error_key="bench.ct2_run", file=f"{model.parent.name}/{model.name}")


def run_ct2(model_dir: Path, python: str, prompt_ids: list[int], new_tokens: int, threads: int, repeats: int, warmup: int,
            folder: Path, variants=CT2_VARIANTS) -> list[dict]:
    """CTranslate2 rows (one per variant) for the same prompt ids, new tokens and threads as the engine's cells."""
    models = ensure_ct2(model_dir, python, variants, folder)
    rows = []
    for variant in variants:
        result = time_ct2(models[variant], python, variant, prompt_ids, new_tokens, threads, repeats, warmup)
        rows.append(peer_row(result["runs"], variant=variant, version=result["version"], prompt_tokens=len(prompt_ids),
                             new_tokens=new_tokens, threads=threads, load_s=result["load_s"], peak_rss_mb=result["peak_rss_mb"],
                             size_mb=(models[variant] / "model.bin").stat().st_size / 1e6, backend=BACKEND,
                             package="ctranslate2"))
    return rows
