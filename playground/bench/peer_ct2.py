"""The CTranslate2 peer cell: the same model converted by CTranslate2's own converter and timed by its generator.

CTranslate2 runs in a subprocess of a python that has `ctranslate2` (`--ct2-python`, default this one: it installs
beside the project's pins, `pip install -e ".[peers]"`), so its OpenMP runtime and memory are its own, as
llama.cpp's are. The model is converted from the same local folder by `ctranslate2.converters.TransformersConverter`
once per variant (the weights stored as the variant asks, so the file's size is the variant's), and loaded with the
same compute type:

- float32: float32 weights and compute;
- int8_float32: int8 weights (per output channel), int8 GEMMs, the rest in float32;
- int8: CTranslate2's "int8" (on a CPU the same kernels as int8_float32; kept to show that).

One adjustment is made at conversion time: a model whose embedding has more rows than its tokenizer has tokens
(the random: models, GPT-2's 50257 rows with the demo tokenizer's 4096 tokens) gets a placeholder token for each
extra row, as llama.cpp's converter does (`[PAD<id>]`); CTranslate2's converter refuses the mismatch otherwise.

The timing mirrors the ONNX cells: the same prompt token ids (as the model's own vocabulary strings, its
vocabulary.json, so the ids are exact), greedy (`sampling_topk=1`), exactly `new_tokens` new tokens
(`end_token=[]`: it neither stops at nor suppresses the end of text, as the bench's `ignore_eos`), `intra_threads`
= the bench's threads, a warm-up and `repeats` repeats, the repeat with the median decode speed. Each token is
stamped by the callback that the decoding loop calls as it chooses the token (the one `generate_tokens` streams
from), with the prompt through the decoder at once (`include_prompt_in_result=False`, as `generate_tokens` does):
the time to first token is the prompt's evaluation and the first token's choice, each later latency one step's.
Stamping where `generate_tokens` yields instead measures its queue: its reader thread wakes late, and on a small
model it then finds the later tokens all waiting (a few microseconds each).
"""

from __future__ import annotations

from pathlib import Path

from .peers import PEAK_RSS, convert_in_subprocess, installed_version, peer_row, refresh_folder, time_in_subprocess

BACKEND = "CTranslate2"
CT2_VARIANTS = ("float32", "int8_float32", "int8")
HOW_TO_GET = ("CTranslate2 rows skipped: install it beside the project (`pip install -e \".[peers]\"`, ctranslate2 4.8.5), "
              "or give --ct2-python PATH_TO_A_PYTHON_WITH_CTRANSLATE2_AND_TRANSFORMERS.")

# argv[1]: JSON {model, out, variants}: the model folder converted into out/<variant>/ for each variant.
CONVERT = """
import json, sys
from ctranslate2.converters import TransformersConverter
from ctranslate2.converters.transformers import GPT2Loader
job = json.loads(sys.argv[1])
tokens_of = GPT2Loader.get_vocabulary

def padded(self, model, tokenizer):  # the embedding's rows past the tokenizer's tokens get placeholder tokens
    tokens = tokens_of(self, model, tokenizer)
    return tokens + [f"[PAD{i}]" for i in range(len(tokens), model.config.vocab_size)]

GPT2Loader.get_vocabulary = padded
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
    stamps, tokens = [], []

    def taken(step):  # called by the decoding loop as each token is chosen (what generate_tokens streams from)
        stamps.append(time.perf_counter())
        tokens.append(step.token_id)
        return False  # go on

    started = time.perf_counter()
    # include_prompt_in_result=False: the prompt goes through the decoder at once (as generate_tokens does), not a
    # token at a time
    generator.generate_batch([prompt], max_length=new_tokens, sampling_topk=1, end_token=[], include_prompt_in_result=False,
                             callback=taken)
    return [(b - a) * 1000 for a, b in zip([started] + stamps[:-1], stamps)], tokens

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
        convert_in_subprocess(python, CONVERT, job, error_key="bench.ct2_convert", model=model_dir.name)
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
