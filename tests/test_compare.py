"""Comparing a PyTorch run with an ONNX run of the same prompt, settings and seed."""

import pytest

from playground.backends.onnx_backend import OnnxBackend
from playground.compare import compare
from playground.config import GenerationSettings
from playground.generation import generate

SETTINGS = GenerationSettings(max_new_tokens=30, seed=7, temperature=0.9)


@pytest.fixture(scope="module")
def torch_run(tiny_backend, tiny_source):
    return generate(tiny_backend, tiny_source, "The value of the", SETTINGS)


def test_fp32_onnx_is_identical_to_pytorch(tiny_source, torch_run, tmp_path_factory):
    onnx = OnnxBackend(tiny_source, "fp32", device="cpu", exports_root=tmp_path_factory.mktemp("e"), progress=False)
    c = compare(torch_run, generate(onnx, tiny_source, "The value of the", SETTINGS))
    assert c.first_divergence is None and c.same_text
    assert len(c.positions) == 30 and c.max_abs_prob_diff < 1e-4
    assert c.tokens_per_s_a > 0 and c.tokens_per_s_b > 0 and c.speedup_b_over_a > 0


def test_divergence_is_located_exactly(tiny_backend, tiny_source, torch_run):
    # Another seed: the same model samples differently at some point; compare must find the first such token.
    other = generate(tiny_backend, tiny_source, "The value of the", GenerationSettings(max_new_tokens=30, seed=8, temperature=0.9))
    c = compare(torch_run, other)
    first = next(i for i, (x, y) in enumerate(zip(torch_run.tokens, other.tokens)) if x.token_id != y.token_id)
    assert c.first_divergence == first and not c.same_text
    assert len(c.probs_a) == first + 1
    # Before the divergence both runs saw the same context: identical probabilities (same backend).
    assert c.probs_a[:first] == pytest.approx(c.probs_b[:first])
