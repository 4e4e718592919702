"""The peer cells: llama.cpp, CTranslate2 and OpenVINO: the "how to get it" lines without them, their rows' shape, and
(where each is here) a real conversion and run of the tiny model whose greedy tokens equal ours."""

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from playground.bench import peer_ct2, peer_openvino
from playground.bench.engine import (JSON_KEYS, BenchConfig, PeerPythons, add_speedups, main, markdown_table, run_all_peers,
                                     run_ct2_cells, run_openvino_cells, run_peer_cells)
from playground.bench.peers import HOW_TO_GET, PEER_VARIANTS, PeerConfig, missing_reason, peer_row
from playground.config import GenerationSettings
from playground.generation import Generation

LLAMA_PYTHON = Path("/work/llama-venv/bin/python")
LLAMA_SRC = Path("/work/llama-build/src/llama_cpp_python-0.3.36/vendor/llama.cpp")
# CTranslate2: this python (the test extra installs it) or PLAYGROUND_CT2_PYTHON's; OpenVINO: the venv that
# docs/benchmark.md's command sets up (.venv-openvino in the checkout) or PLAYGROUND_OPENVINO_PYTHON's.
CT2_PYTHON = os.environ.get("PLAYGROUND_CT2_PYTHON") or sys.executable
OPENVINO_PYTHON = os.environ.get("PLAYGROUND_OPENVINO_PYTHON") or str(Path(__file__).parents[1] / ".venv-openvino/bin/python")


def _has_llama_cpp(python: str) -> bool:
    return subprocess.run([python, "-c", "import llama_cpp"], capture_output=True).returncode == 0


def test_without_llama_cpp_the_benchmark_says_how_to_get_it(tmp_path, tiny_source):
    # no source tree, a folder that is not one, then a tree with no llama-cpp-python in the python given
    assert missing_reason(PeerConfig(sys.executable, None)) == HOW_TO_GET
    assert missing_reason(PeerConfig(sys.executable, str(tmp_path))) == HOW_TO_GET
    (tmp_path / "convert_hf_to_gguf.py").write_text("")
    assert missing_reason(PeerConfig(str(tmp_path / "no-such-python"), str(tmp_path))) == HOW_TO_GET
    rows, note = run_peer_cells(tiny_source, BenchConfig([4], [3], 1, threads=1), PeerConfig(sys.executable, None))
    assert rows == [] and note == HOW_TO_GET
    assert "pip install llama-cpp-python" in HOW_TO_GET and "--llama-src" in HOW_TO_GET


def test_the_command_line_prints_the_line_or_skips_it(tiny_model_dir, tmp_path, capsys):
    args = ["--model", str(tiny_model_dir), "--cells", "torch:fp32", "--prompt-tokens", "4", "--new-tokens", "3",
            "--repeats", "1", "--db", str(tmp_path / "h.db")]
    assert main(args + ["--llama-src", str(tmp_path / "missing"), "--ct2-python", str(tmp_path / "no-python")]) == 0
    out = capsys.readouterr().out
    assert HOW_TO_GET in out and peer_ct2.HOW_TO_GET in out and peer_openvino.HOW_TO_GET in out  # no --openvino-python
    assert main(args + ["--no-llama", "--no-ct2", "--no-openvino"]) == 0
    out = capsys.readouterr().out
    assert HOW_TO_GET not in out and peer_ct2.HOW_TO_GET not in out and peer_openvino.HOW_TO_GET not in out


def test_without_ctranslate2_or_openvino_the_benchmark_says_how_to_set_them_up(tiny_source, tmp_path):
    config = BenchConfig([4], [3], 1, threads=1)
    for python in (None, str(tmp_path / "no-such-python"), sys.executable if peer_openvino.missing_reason(sys.executable) else None):
        assert run_openvino_cells(tiny_source, config, python) == ([], peer_openvino.HOW_TO_GET)
    for python in (None, str(tmp_path / "no-such-python")):
        assert run_ct2_cells(tiny_source, config, python) == ([], peer_ct2.HOW_TO_GET)
    # each line names its one command: the extra beside the pins, and the venv of its own
    assert 'pip install -e ".[peers]"' in peer_ct2.HOW_TO_GET and "--ct2-python" in peer_ct2.HOW_TO_GET
    assert peer_openvino.SETUP_COMMAND in peer_openvino.HOW_TO_GET and "--openvino-python" in peer_openvino.HOW_TO_GET


def test_a_peer_row_has_the_engine_rows_shape_and_the_median_repeat():
    # three repeats: the prompt's latency first, then 4 decode steps each
    runs = [[50.0, 10, 10, 10, 10], [40.0, 20, 20, 20, 20], [60.0, 5, 5, 5, 5]]
    row = peer_row(runs, variant="Q4_0", version="0.3.36", prompt_tokens=32, new_tokens=5, threads=2, load_s=0.4,
                   peak_rss_mb=300.0, size_mb=84.2)
    assert set(JSON_KEYS) <= row.keys()
    assert (row["backend"], row["variant"], row["batch"], row["repeats"]) == ("llama.cpp", "Q4_0", 1, 3)
    assert row["ttft_ms"] == 50.0 and row["decode_tokens_per_s"] == 100.0  # the median: 4 steps in 40 ms
    assert row["per_sequence_tokens_per_s"] == pytest.approx((row["new_tokens"] - 1) / row["decode_s"], rel=1e-3)
    assert row["top1_agreement"] is None and not row["quality_meaningful"]
    torch_row = dict(row, backend="torch", variant="fp32", provider="PyTorch", decode_tokens_per_s=50.0)
    rows = [torch_row, row]
    add_speedups(rows)
    assert row["speedup_vs_torch_fp32"] == 2.0
    line = markdown_table(rows).splitlines()[-1]
    assert line.startswith("| llama.cpp Q4_0 | llama-cpp-python 0.3.36 | 32+5 | 1 |") and line.endswith("| 84.2 | - |")


@pytest.mark.skipif(not (LLAMA_PYTHON.exists() and LLAMA_SRC.is_dir()),
                    reason=f"llama.cpp is not here ({LLAMA_PYTHON} with llama-cpp-python and {LLAMA_SRC}); CI has none")
def test_the_real_peer_cell_on_the_tiny_model(tiny_source, tmp_path):
    if not _has_llama_cpp(str(LLAMA_PYTHON)):
        pytest.skip(f"{LLAMA_PYTHON} cannot import llama_cpp")
    config = BenchConfig([8], [6], repeats=2, warmup=1, threads=1)
    rows, note = run_peer_cells(tiny_source, config, PeerConfig(str(LLAMA_PYTHON), str(LLAMA_SRC)), exports_root=tmp_path)
    assert note is None
    assert [r["variant"] for r in rows] == list(PEER_VARIANTS)
    for r in rows:
        assert set(JSON_KEYS) <= r.keys() and r["backend"] == "llama.cpp" and r["provider"].startswith("llama-cpp-python")
        assert (r["prompt_tokens"], r["new_tokens"], r["threads"], r["repeats"]) == (8, 6, 1, 2)
        assert all(r[k] > 0 for k in ("ttft_ms", "decode_tokens_per_s", "latency_p50_ms", "peak_rss_mb", "size_mb"))
        # decode_s is stored to 6 decimals: on a tiny model (~0.5 ms) that rounding alone moves 5 / decode_s by ~1e-3.
        assert r["per_sequence_tokens_per_s"] == pytest.approx(5 / r["decode_s"], rel=1e-3 + 1e-6 / r["decode_s"])
        # the llama.cpp process's own peak (a tiny GGUF), not this process's carried over the fork and exec
        assert r["peak_rss_mb"] < psutil.Process().memory_info().rss / 1e6
    f32, q8, q4 = (r["size_mb"] for r in rows)
    assert f32 > q8 > q4  # the quantizations happened
    folder = tmp_path / tiny_source.name / "gguf"
    assert sorted(p.name for p in folder.glob("*.gguf")) == ["Q4_0.gguf", "Q8_0.gguf", "f32.gguf"]
    assert json.loads((folder / "source.json").read_text())  # reused while the model's files are unchanged


def _our_greedy_ids(backend, source, prompt_ids: list[int], new_tokens: int) -> list[int]:
    run = Generation(backend, source, "", GenerationSettings(max_new_tokens=new_tokens, do_sample=False), ignore_eos=True,
                     prompt_ids=prompt_ids)
    return [record.token_id for _, record in run.samples() if not record.is_prompt]


def _check_peer_rows(rows, backend: str, variants, package: str):
    assert [r["variant"] for r in rows] == list(variants)
    for r in rows:
        assert set(JSON_KEYS) <= r.keys() and r["backend"] == backend and r["provider"].startswith(package + " ")
        assert (r["prompt_tokens"], r["new_tokens"], r["threads"], r["repeats"], r["batch"]) == (8, 6, 1, 2, 1)
        assert all(r[k] > 0 for k in ("ttft_ms", "decode_tokens_per_s", "latency_p50_ms", "peak_rss_mb", "size_mb")), r
        assert r["peak_rss_mb"] < psutil.Process().memory_info().rss / 1e6  # the peer process's own peak
    table = markdown_table(rows)
    assert all(f"| {backend} {v} | {package} " in table for v in variants)


def test_the_real_ctranslate2_cells_on_the_tiny_model(tiny_source, tiny_backend, tmp_path):
    if peer_ct2.missing_reason(CT2_PYTHON):
        pytest.skip(f"{CT2_PYTHON} has no ctranslate2 (pip install -e \".[peers]\"; the test extra installs it)")
    config = BenchConfig([8], [6], repeats=2, warmup=1, threads=1)
    rows, note = run_ct2_cells(tiny_source, config, CT2_PYTHON, exports_root=tmp_path)
    assert note is None
    _check_peer_rows(rows, "CTranslate2", peer_ct2.CT2_VARIANTS, "ctranslate2")
    folder = tmp_path / tiny_source.name / "ct2"
    assert sorted(p.name for p in folder.iterdir()) == sorted([*peer_ct2.CT2_VARIANTS, "source.json"])
    float32, int8_float32, int8 = ((folder / v / "model.bin").stat().st_size for v in peer_ct2.CT2_VARIANTS)
    assert float32 > 2 * int8_float32 and int8 == int8_float32  # int8 weights stored (the tiny model's rows round to 0.x MB)
    # float32: CTranslate2's greedy tokens are ours, token for token, from the same prompt ids
    ids = tiny_source.tokenizer("the cat sat on the mat and")["input_ids"]
    theirs = peer_ct2.time_ct2(folder / "float32", CT2_PYTHON, "float32", ids, 20, threads=1, repeats=1, warmup=0)
    assert theirs["tokens"] == _our_greedy_ids(tiny_backend, tiny_source, ids, 20)
    # A peer variant that fails (here CTranslate2 itself, on a damaged model file) is left out with a line saying why;
    # the other variants' rows still come, and the benchmark does not end.
    (folder / "int8" / "model.bin").write_bytes(b"not a CTranslate2 model")
    rows, missing, failed = run_all_peers(tiny_source, BenchConfig([8], [3], repeats=1, warmup=0, threads=1),
                                          PeerPythons(ct2=CT2_PYTHON), exports_root=tmp_path)
    assert [r["variant"] for r in rows] == ["float32", "int8_float32"] and missing == {}
    assert [(name, variant, exc.key) for name, variant, exc in failed] == [("CTranslate2", "int8", "bench.ct2_run")]
    assert "int8" in str(failed[0][2])


@pytest.mark.slow
def test_the_real_openvino_cells_on_the_tiny_model(tiny_source, tiny_backend, tmp_path):
    if peer_openvino.missing_reason(OPENVINO_PYTHON):
        pytest.skip(f"no OpenVINO venv at {OPENVINO_PYTHON} (docs/benchmark.md: {peer_openvino.SETUP_COMMAND}); CI has none")
    config = BenchConfig([8], [6], repeats=2, warmup=1, threads=1)
    rows, note = run_openvino_cells(tiny_source, config, OPENVINO_PYTHON, exports_root=tmp_path)
    assert note is None
    _check_peer_rows(rows, "OpenVINO", peer_openvino.OPENVINO_VARIANTS, "openvino")
    folder = tmp_path / tiny_source.name / "openvino"
    fp32, int8, int4 = ((folder / v / "openvino_model.bin").stat().st_size for v in peer_openvino.OPENVINO_VARIANTS)
    assert fp32 > 2 * int8 and int8 > int4  # NNCF compressed the weights
    ids = tiny_source.tokenizer("the cat sat on the mat and")["input_ids"]
    theirs = peer_openvino.time_openvino(folder / "fp32/openvino_model.xml", OPENVINO_PYTHON, ids, 20, threads=1, repeats=1,
                                         warmup=0)
    assert theirs["tokens"] == _our_greedy_ids(tiny_backend, tiny_source, ids, 20)
