"""Comparing two runs of the same prompt, settings and seed: PyTorch vs ONNX, one model vs another, and two
models whose tokenizers differ (nothing to compare token by token)."""

from html import escape

import pytest

from playground.backends.onnx import OnnxBackend
from playground.backends.torch import TorchBackend
from playground.analysis.compare import compare, same_vocabulary
from playground.config import GenerationSettings
from playground.generation import generate
from playground.models import resolve_model

SETTINGS = GenerationSettings(max_new_tokens=30, seed=7, temperature=0.9)
PROMPT = "The value of the"


@pytest.fixture(scope="module")
def torch_run(tiny_backend, tiny_source):
    return generate(tiny_backend, tiny_source, PROMPT, SETTINGS)


@pytest.fixture(scope="module")
def copy_source(models_root):
    """The same weights and tokenizer as the tiny model, in another folder under another name."""
    return resolve_model(str(models_root / "tiny-copy"))


@pytest.fixture(scope="module")
def zh_source(models_root):
    """A Chinese model: a character BertTokenizer instead of byte-level BPE."""
    return resolve_model(str(models_root / "tiny-zh"))


def test_fp32_onnx_is_identical_to_pytorch(tiny_source, torch_run, tiny_exports_root):
    onnx = OnnxBackend(tiny_source, "fp32", device="cpu", exports_root=tiny_exports_root, progress=False)
    c = compare(torch_run, generate(onnx, tiny_source, PROMPT, SETTINGS))
    assert c.first_divergence is None and c.same_text
    assert len(c.positions) == 30 and c.max_abs_prob_diff < 1e-4
    assert c.tokens_per_s_a > 0 and c.tokens_per_s_b > 0 and c.speedup_b_over_a > 0


def test_divergence_is_located_exactly(tiny_backend, tiny_source, torch_run):
    # Another seed: the same model samples differently at some point; compare must find the first such token.
    other = generate(tiny_backend, tiny_source, PROMPT, GenerationSettings(max_new_tokens=30, seed=8, temperature=0.9))
    c = compare(torch_run, other)
    first = next(i for i, (x, y) in enumerate(zip(torch_run.tokens, other.tokens)) if x.token_id != y.token_id)
    assert c.first_divergence == first and not c.same_text
    assert len(c.probs_a) == first + 1
    # Before the divergence both runs saw the same context: identical probabilities (same backend).
    assert c.probs_a[:first] == pytest.approx(c.probs_b[:first])


def test_two_models_with_the_same_weights_agree_exactly(torch_run, copy_source):
    # "Base vs fine-tuned" with nothing fine-tuned: another model, another backend object, the same seed.
    other = generate(TorchBackend(copy_source, device="cpu"), copy_source, PROMPT, SETTINGS)
    assert other.info.model == "tiny-copy" and torch_run.info.model != other.info.model
    c = compare(torch_run, other)
    assert c.first_divergence is None and c.same_text and c.max_abs_prob_diff == 0.0


@pytest.mark.parametrize("other, same", [("tiny", True), ("copy", True), ("zh", False)])
def test_same_vocabulary_tells_matching_tokenizers_apart(tiny_source, copy_source, zh_source, other, same):
    codec = {"tiny": tiny_source, "copy": copy_source, "zh": zh_source}[other].codec
    assert same_vocabulary(tiny_source.codec, codec) is same
    assert same_vocabulary(codec, tiny_source.codec) is same


def test_a_tokenizer_with_two_tokens_swapped_is_not_the_same(tiny_source, tiny_model_dir, tmp_path):
    # Same size, same kind, same tokens; only ids 300 and 301 trade places: equal ids would name different tokens.
    import json
    import shutil

    folder = shutil.copytree(tiny_model_dir, tmp_path / "swapped")
    vocab = json.loads((folder / "vocab.json").read_text())
    by_id = {i: token for token, i in vocab.items()}
    vocab[by_id[300]], vocab[by_id[301]] = 301, 300
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "tokenizer.json").unlink(missing_ok=True)  # else the fast tokenizer keeps the original vocabulary
    swapped = resolve_model(str(folder)).codec
    assert len(swapped) == len(tiny_source.codec)
    assert not same_vocabulary(tiny_source.codec, swapped)


def test_the_summary_names_both_sides_and_the_seed_and_notes_different_tokenizers(torch_run, zh_source):
    from playground.ui.compare_tab import summary_markdown

    zh_run = generate(TorchBackend(zh_source, device="cpu"), zh_source, "床前明月光，", SETTINGS)
    text = summary_markdown(torch_run, zh_run, None, "en", (512, len(zh_source.codec)))
    assert torch_run.info.label() in text and zh_run.info.label() in text
    assert "seed on both sides: **7**" in text and "Different tokenizers" in text
    zh_text = summary_markdown(torch_run, zh_run, None, "zh-CN", (512, len(zh_source.codec)))
    assert "分词器不同" in zh_text and "**7**" in zh_text
    same = summary_markdown(torch_run, torch_run, compare(torch_run, torch_run), "en")
    assert "Identical output" in same and "**A**" in same and "**B**" in same


def test_the_summary_names_the_diverging_tokens_by_side(tiny_backend, tiny_source, torch_run):
    from playground.ui.compare_tab import summary_markdown
    from playground.ui.render import output_token_name

    other = generate(tiny_backend, tiny_source, PROMPT, GenerationSettings(max_new_tokens=30, seed=8, temperature=0.9))
    c = compare(torch_run, other)
    i = c.first_divergence
    text = summary_markdown(torch_run, other, c, "en")
    assert f"First divergence at generated token {i}**: A chose `" in text
    assert "Probability" not in text and "PyTorch chose" not in text
    zh = summary_markdown(torch_run, other, c, "zh-CN")
    assert f"第 {i} 个生成词元" in zh and "A 选了" in zh and "B 选了" in zh
    assert f"B chose `{escape(output_token_name(other, i))}`" in text  # named by the character it spells, escaped
