"""Attention for a finished run: the cap, the figures (escaped labels, causal mask), and the download files."""

import numpy as np
import pytest

from playground.analysis.attention import compute_attention, heatmap_figure, row_figure, small_multiples, static_heatmap

HOSTILE = '<img src=x onerror="alert(1)">'


@pytest.fixture(scope="module")
def run_ids(tiny_source):
    return tiny_source.tokenizer(f"The value {HOSTILE} of the attribute is the value of the object")["input_ids"]


def test_attention_of_a_run_is_causal_and_normalised(tiny_backend, tiny_source, run_ids):
    run = compute_attention(tiny_backend, run_ids, tiny_source.codec)
    config = tiny_backend.model.config
    assert run.weights.shape == (config.n_layer, config.n_head, len(run_ids), len(run_ids))
    assert np.allclose(run.weights.sum(-1), 1.0, atol=1e-5)
    assert np.triu(run.weights, k=1).max() == 0.0
    assert run.notice is None and run.first_position == 0 and run.computed_by == "torch fp32 · cpu"
    assert np.allclose(run.matrix(1, None), run.weights[1].mean(0))


def test_long_runs_are_capped_with_a_notice(tiny_backend, tiny_source, run_ids):
    run = compute_attention(tiny_backend, run_ids, tiny_source.codec, cap=10)
    assert run.weights.shape[-1] == 10 and run.token_ids == run_ids[-10:]
    assert run.first_position == len(run_ids) - 10 and "last 10" in run.notice


def test_figures_escape_labels_and_mask_the_future(tiny_backend, tiny_source, run_ids):
    run = compute_attention(tiny_backend, run_ids, tiny_source.codec)
    figure = heatmap_figure(run, 0, None, query=5)
    ticktext = " ".join(figure.layout.yaxis.ticktext)
    z = np.array(figure.data[0].z, dtype=float)
    assert "<img" not in ticktext and "<" not in "".join(figure.data[0].text[3][:4]).replace("<br>", "")
    assert np.isnan(z[np.triu_indices(len(run_ids), k=1)]).all()  # upper triangle empty
    assert len(figure.layout.shapes) == 1  # the highlighted row
    bars = row_figure(run, 0, 1, 5)
    assert np.allclose(bars.data[0].y, run.weights[0, 1, 5, :6])


def test_download_files_are_real(tiny_backend, tiny_source, run_ids, tmp_path):
    run = compute_attention(tiny_backend, run_ids, tiny_source.codec)
    png = static_heatmap(run, 1, 0, tmp_path / "a.png")
    svg = static_heatmap(run, 1, None, tmp_path / "a.svg")
    heads = small_multiples(run, 0, tmp_path / "heads.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and heads.read_bytes()[:4] == b"\x89PNG"
    text = svg.read_text()
    assert "<svg" in text[:1000] and "&lt;" in text  # labels (the '<' token too) are escaped text in the SVG
    loaded = np.load(run.save_npz(tmp_path / "a.npz"))
    assert np.array_equal(loaded["attention"], run.weights) and list(loaded["token_ids"]) == run_ids


def test_onnx_runs_get_onnx_attention(tiny_source, tiny_exports_root, run_ids):
    from playground.backends.onnx import OnnxBackend

    backend = OnnxBackend(tiny_source, "int8", device="cpu", exports_root=tiny_exports_root, progress=False)
    run = compute_attention(backend, run_ids, tiny_source.codec)
    assert run.computed_by == "onnx int8 · CPUExecutionProvider"
    assert np.allclose(run.weights.sum(-1), 1.0, atol=1e-4)


def test_attention_labels_name_whole_characters(tiny_backend, tiny_source, tmp_path):
    from playground.analysis.attention import static_heatmap

    ids = tiny_source.codec.encode("注意 café")
    run = compute_attention(tiny_backend, ids, tiny_source.codec)
    assert run.labels[:3] == ["注(1/3)", "注(2/3)", "注(3/3)"] and "é(2/2)" in run.labels
    ticktext = heatmap_figure(run, 0, None).layout.xaxis.ticktext
    assert all("\ufffd" not in label for label in list(ticktext) + run.labels)
    assert static_heatmap(run, 0, None, tmp_path / "cjk.svg").read_text().count("注") >= 6


@pytest.mark.parametrize("lang, words", [("en", ["Layer 1: all 2 heads", "head 0", "head 1"]),
                                         ("zh-CN", ["第 1 层：全部 2 个注意力头", "第 0 个头", "第 1 个头"])])
def test_the_all_heads_image_speaks_the_pages_language(tiny_backend, tiny_source, run_ids, tmp_path, lang, words):
    import matplotlib

    from playground.figures import cjk_family
    from playground.ui.attention_tab import heads_titles

    if lang == "zh-CN" and cjk_family() is None:
        words = ["Layer 1: all 2 heads", "head 0"]  # no font draws Chinese here: English rather than boxes
    run = compute_attention(tiny_backend, run_ids, tiny_source.codec)
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text in the SVG, so it can be read back
        svg = small_multiples(run, 1, tmp_path / "heads.svg", **heads_titles(run, 1, lang)).read_text()
    assert all(word in svg for word in words), words
