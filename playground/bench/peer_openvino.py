"""The OpenVINO peer cell: the same model exported by optimum-intel, its weights compressed by NNCF, timed by OpenVINO.

optimum-intel 2.2.0 needs transformers 5 (and torch >= 2.13) where the project pins transformers 4.57.6, so OpenVINO
runs in a subprocess of its own venv's python (`--openvino-python`), as llama.cpp does; one command sets that venv
up (docs/benchmark.md). The model is exported once from the same local folder as a stateful OpenVINO model
(`OVModelForCausalLM.from_pretrained(export=True)`: the K/V cache lives inside the model, as optimum-intel and
openvino-genai run it), in float32; the quantized variants are that model with its weights compressed by NNCF
(`nncf.compress_weights`, what optimum-intel's OVWeightQuantizationConfig calls):

- fp32: float32 weights;
- int8: INT8_ASYM, one scale and zero point per output channel (optimum-intel's `--weight-format int8`);
- int4: INT4_SYM in groups of 64 along the input dimension, as our int4 blocks; NNCF keeps the embedding and
  lm_head (shared in GPT-2) at int8, as our int4 keeps lm_head at 8 bits.

Every variant is compiled for the CPU with the bench's threads and float32 activations and K/V cache
(INFERENCE_PRECISION_HINT=f32, KV_CACHE_PRECISION=f32): on a CPU with AMX or AVX512-BF16 OpenVINO would otherwise
compute in bfloat16 and keep the cache in u8, which is not the precision the row is named for, nor ours.

The timing mirrors the ONNX cells and llama.cpp's: the same prompt token ids, greedy (argmax of the last logits row),
a fixed number of new tokens, a warm-up and `repeats` repeats, the repeat with the median decode speed; `ttft_ms` is
the prompt's evaluation plus the first token's choice, each later latency one step's (one token in, through
the infer request's state).
"""

from __future__ import annotations

from pathlib import Path

from .peers import PEAK_RSS, convert_in_subprocess, installed_version, peer_row, refresh_folder, time_in_subprocess

BACKEND = "OpenVINO"
OPENVINO_VARIANTS = ("fp32", "int8", "int4")
SETUP_COMMAND = ('python3 -m venv .venv-openvino && .venv-openvino/bin/pip install "optimum-intel[openvino,nncf]==2.2.0" '
                 'torch==2.13.0 && .venv-openvino/bin/pip uninstall -y torchvision')
HOW_TO_GET = (f"OpenVINO rows skipped: it runs in a venv of its own (optimum-intel needs transformers 5); set one up with "
              f"`{SETUP_COMMAND}` and give --openvino-python .venv-openvino/bin/python.")

# argv[1]: JSON {model, out, variants}: out/<variant>/openvino_model.xml for each variant (fp32 exported first if absent).
CONVERT = """
import json, os, sys
job = json.loads(sys.argv[1])
out = job["out"]
if not os.path.isfile(out + "/fp32/openvino_model.xml"):
    from optimum.intel import OVModelForCausalLM
    model = OVModelForCausalLM.from_pretrained(job["model"], export=True, load_in_8bit=False, compile=False)
    model.save_pretrained(out + "/fp32.tmp")
    os.replace(out + "/fp32.tmp", out + "/fp32")
import nncf, openvino as ov
MODES = {"int8": dict(mode=nncf.CompressWeightsMode.INT8_ASYM),
         "int4": dict(mode=nncf.CompressWeightsMode.INT4_SYM, group_size=64, ratio=1.0)}
for variant in job["variants"]:
    if variant == "fp32":
        continue
    model = nncf.compress_weights(ov.Core().read_model(out + "/fp32/openvino_model.xml"), **MODES[variant])
    ov.save_model(model, out + "/" + variant + ".tmp/openvino_model.xml", compress_to_fp16=False)
    os.replace(out + "/" + variant + ".tmp", out + "/" + variant)
"""

# argv[1]: JSON {model, ids, new_tokens, threads, repeats, warmup}; prints one JSON line of timings.
TIME = """
import json, sys, time
import numpy as np
import openvino as ov
job = json.loads(sys.argv[1])
started = time.perf_counter()
core = ov.Core()
compiled = core.compile_model(core.read_model(job["model"]), "CPU", {
    "INFERENCE_NUM_THREADS": job["threads"], "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
    "INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"})
request = compiled.create_infer_request()
load_s = time.perf_counter() - started
beam = np.zeros(1, dtype=np.int32)

def feed(tokens, past):
    n = len(tokens)
    request.infer({"input_ids": np.array([tokens], dtype=np.int64), "attention_mask": np.ones((1, past + n), dtype=np.int64),
                   "position_ids": np.arange(past, past + n, dtype=np.int64)[None], "beam_idx": beam})
    return int(request.get_tensor("logits").data[0, -1].argmax())  # logits (1, n, V): the last row's argmax

def run(new_tokens):
    request.reset_state()  # an empty K/V cache
    ids = job["ids"]
    latencies, last = [], time.perf_counter()
    token = feed(ids, 0)
    tokens = [token]
    for step in range(new_tokens):
        now = time.perf_counter()
        latencies.append((now - last) * 1000)
        last = now
        if step + 1 < new_tokens:
            token = feed([token], len(ids) + step)
            tokens.append(token)
    return latencies, tokens

for _ in range(job["warmup"]):
    run(min(job["new_tokens"], 8))
runs = [run(job["new_tokens"]) for _ in range(job["repeats"])]
""" + PEAK_RSS + """
print(json.dumps({"load_s": load_s, "runs": [r[0] for r in runs], "tokens": runs[-1][1], "version": ov.__version__.split("-")[0],
                  "peak_rss_mb": peak_kb * 1024 / 1e6}))
"""


def missing_reason(python: str | None) -> str | None:
    """None when the OpenVINO cells can run in `python` (it has openvino, NNCF and optimum-intel); otherwise the one
    line that says how to set it up."""
    return HOW_TO_GET if python is None or installed_version(python, "openvino", "nncf", "optimum-intel") is None else None


def ensure_openvino(model_dir: Path, python: str, variants, folder: Path) -> dict[str, Path]:
    """The model as `folder/<variant>/openvino_model.xml` for each variant, exported or compressed on first use,
    reused while the model's files are unchanged."""
    refresh_folder(model_dir, folder)
    todo = [v for v in variants if not (folder / v / "openvino_model.xml").is_file()]
    if todo:
        job = {"model": str(model_dir), "out": str(folder), "variants": todo}
        convert_in_subprocess(python, CONVERT, job, error_key="bench.openvino_convert", model=model_dir.name)
    return {v: folder / v / "openvino_model.xml" for v in variants}


def time_openvino(model: Path, python: str, prompt_ids: list[int], new_tokens: int, threads: int, repeats: int,
                  warmup: int) -> dict:
    """OpenVINO's timings of one model: {load_s, runs (per-step ms, each run), tokens (the last run's greedy ids),
    version, peak_rss_mb}."""
    job = {"model": str(model), "ids": list(prompt_ids), "new_tokens": new_tokens, "threads": threads, "repeats": repeats,
           "warmup": warmup}
    return time_in_subprocess(python, TIME, job, error_key="bench.openvino_run", file=f"{model.parent.name}/{model.name}")


def run_openvino(model_dir: Path, python: str, prompt_ids: list[int], new_tokens: int, threads: int, repeats: int,
                 warmup: int, folder: Path, variants=OPENVINO_VARIANTS) -> list[dict]:
    """OpenVINO rows (one per variant) for the same prompt ids, new tokens and threads as the engine's cells."""
    models = ensure_openvino(model_dir, python, variants, folder)
    rows = []
    for variant in variants:
        result = time_openvino(models[variant], python, prompt_ids, new_tokens, threads, repeats, warmup)
        rows.append(peer_row(result["runs"], variant=variant, version=result["version"], prompt_tokens=len(prompt_ids),
                             new_tokens=new_tokens, threads=threads, load_s=result["load_s"], peak_rss_mb=result["peak_rss_mb"],
                             size_mb=models[variant].with_suffix(".bin").stat().st_size / 1e6, backend=BACKEND,
                             package="openvino"))
    return rows
