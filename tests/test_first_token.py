"""The first token first (onnx/head.py, batching.py's _join): a run's first token goes out before its prompt's other
positions are scored, and the prompt's records that follow are those of a whole prefill, token by token, on PyTorch
and on every ONNX variant (real exports of the tiny model)."""

import numpy as np
import pytest

from playground.backends.onnx import OnnxBackend
from playground.config import GenerationSettings
from playground.generation import Generation

PROMPT = "The value of the attribute is the return of a function"
ATOL = {"torch": 1e-6, "fp32": 1e-6, "int8": 1e-6, "int4": 1e-6}


@pytest.fixture(scope="module")
def backends(tiny_backend, tiny_source, tiny_exports_root):
    root = tiny_exports_root
    return {"torch": tiny_backend, **{variant: OnnxBackend(tiny_source, variant, device="cpu", exports_root=root, progress=False)
                                      for variant in ("fp32", "int8", "int4")}}


def start(backend, source, prompt_first=False, **settings):
    settings = GenerationSettings(**{"max_new_tokens": 6, "seed": 3, "top_alternatives": 5, **settings})
    return Generation(backend, source, PROMPT, settings, prompt_first=prompt_first, num_samples=2)


def assert_same_prompt(got, want, atol):
    assert [t.token_id for t in got] == [t.token_id for t in want] and [t.bytes for t in got] == [t.bytes for t in want]
    assert got[0].raw_prob is None and want[0].raw_prob is None  # the first token has nothing before it
    for a, b in zip(got[1:], want[1:]):
        assert a.raw_prob == pytest.approx(b.raw_prob, abs=atol) and a.rank == b.rank
        assert a.entropy_bits == pytest.approx(b.entropy_bits, abs=atol * 20)
        assert [x.token_id for x in a.top] == [x.token_id for x in b.top]
        assert [x.prob for x in a.top] == pytest.approx([x.prob for x in b.top], abs=atol)


@pytest.mark.parametrize("name", ["torch", "fp32", "int8", "int4"])
def test_the_first_token_comes_before_the_prompt_is_scored_and_the_scores_are_a_whole_prefills(backends, tiny_source, name):
    backend = backends[name]
    if name != "torch":
        assert backend.runner.has_first  # the export has `logits_from` and its head graph
    run = start(backend, tiny_source)
    records = iter(run.samples())
    next(records)
    at_first = run.results[1].prompt_tokens
    assert len(at_first) > 5 and all(t.raw_prob is None for t in at_first)  # token, text and position; no score yet
    for _ in records:
        pass
    whole = start(backend, tiny_source, prompt_first=True)
    for _ in whole.samples():
        pass
    for got, want in zip(run.results, whole.results):
        assert all(t.raw_prob is not None for t in got.prompt_tokens[1:])
        assert_same_prompt(got.prompt_tokens, want.prompt_tokens, ATOL[name])
        assert [t.token_id for t in got.tokens] == [t.token_id for t in want.tokens]  # the same first distribution
        assert [t.raw_prob for t in got.tokens] == pytest.approx([t.raw_prob for t in want.tokens], abs=ATOL[name])


@pytest.mark.parametrize("name", ["torch", "int8"])
def test_a_run_that_ends_at_its_first_token_or_is_stopped_there_has_its_prompt_scored(backends, tiny_source, name):
    backend = backends[name]
    ended = start(backend, tiny_source, max_new_tokens=1)
    for _ in ended.samples():
        pass
    stopped = start(backend, tiny_source, max_new_tokens=20)
    records = iter(stopped.samples())
    next(records)
    records.close()  # the consumer goes away after the first token: the run leaves the batch
    whole = start(backend, tiny_source, prompt_first=True)
    for _ in whole.samples():
        pass
    for run in (ended, stopped):
        assert run.results[0].finish_reason in {"length", "stopped"}
        assert_same_prompt(run.results[0].prompt_tokens, whole.results[0].prompt_tokens, ATOL[name])


@pytest.mark.parametrize("name", ["fp32", "int8", "int4"])
def test_the_head_graph_gives_the_decoders_own_logits_and_statistics(backends, name):
    """prefill_first + score_rest against one whole prefill, rows of different lengths padded together."""
    runner = backends[name].runner
    prompts = [list(range(30, 41)), [5, 6, 7, 8], [9]]
    logits, cache = runner.prefill_batch(prompts, top_k=4)  # (3, 11, V)
    full = runner.statistics(cache)
    last, last_stats, _, rest = runner.prefill_first(prompts, top_k=4)
    rest_logits, rest_stats = runner.score_rest(rest)
    assert last.shape == (3, 1, logits.shape[-1]) and rest_logits.shape == (3, 10, logits.shape[-1])
    for row, ids in enumerate(prompts):
        pad = 11 - len(ids)
        np.testing.assert_allclose(last[row, 0], logits[row, -1], atol=1e-5)
        np.testing.assert_allclose(rest_logits[row, pad:], logits[row, pad:-1], atol=1e-5)
        for a, b, c in zip(last_stats, rest_stats, full):
            np.testing.assert_allclose(a[row, 0], c[row, -1], atol=1e-5)
            np.testing.assert_allclose(b[row, pad:], c[row, pad:-1], atol=1e-5)
