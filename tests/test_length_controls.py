"""Length controls (min_new_tokens, ignore_eos) on the one path: settings -> transformers' processors -> the decoding
loop -> records; on the English and the Chinese demo models, whose samples often end early at end of text."""

from __future__ import annotations

import pytest
import torch

from playground.analysis.inside import funnel
from playground.backends.torch import TorchBackend
from playground.config import GenerationSettings
from playground.errors import SettingsError
from playground.generation import generate_samples


@pytest.fixture(scope="module")
def sources(tiny_source, tiny_zh_demo_dir):
    from playground.models import resolve_model

    return {"en": tiny_source, "zh": resolve_model(str(tiny_zh_demo_dir))}


@pytest.fixture(scope="module")
def backends(sources):
    return {lang: TorchBackend(source, device="cpu") for lang, source in sources.items()}


SAMPLES = 4


def test_the_chinese_demo_runs_to_the_asked_length(sources, backends):
    """Issue 28's complaint: the Chinese demo ends samples early at [SEP] (here 2 of 4, after 27 and 28 tokens)."""
    source, backend = sources["zh"], backends["zh"]
    eos, new = source.codec.eos_ids, 30
    base = dict(max_new_tokens=new, seed=3, top_k=0)
    plain = generate_samples(backend, source, "今天", GenerationSettings(**base), SAMPLES)
    ended = [len(r.tokens) for r in plain if r.finish_reason == "eos"]
    assert ended and min(ended) < new - 1, [len(r.tokens) for r in plain]  # without the controls, samples end early

    held = generate_samples(backend, source, "今天", GenerationSettings(**base, min_new_tokens=new), SAMPLES)
    assert [(r.finish_reason, len(r.tokens)) for r in held] == [("length", new)] * SAMPLES
    assert not any(t.token_id in eos for r in held for t in r.tokens)
    assert all(len(r.text) >= new // 2 for r in held)  # text to the asked length (characters, not [SEP]s)


@pytest.mark.parametrize("controls", [dict(min_new_tokens=12), dict(ignore_eos=True)])
def test_the_english_demo_never_ends_before_the_length_asked(controls, sources, backends):
    source, backend = sources["en"], backends["en"]
    results = generate_samples(backend, source, "The", GenerationSettings(max_new_tokens=12, seed=14, top_k=0, **controls), SAMPLES)
    assert [(r.finish_reason, len(r.tokens)) for r in results] == [("length", 12)] * SAMPLES
    # The records keep the model's own probabilities (raw_prob); the drawn one's (prob) is renormalised without the
    # end of text, so it is a little higher.
    assert all(t.prob >= t.raw_prob for r in results for t in r.tokens)
    assert all(t.token_id not in source.codec.eos_ids for r in results for t in r.tokens)


def test_the_funnel_shows_the_length_controls_stage(sources, backends):
    source, backend = sources["zh"], backends["zh"]
    ids = source.codec.encode("人生")
    logits, _ = backend.prefill(ids)  # (T, V)
    sep = min(source.codec.eos_ids)
    settings = GenerationSettings(min_new_tokens=5, top_k=0, seed=0)
    stages = funnel(logits[-1], ids, settings, sep, source.codec.eos_ids, prompt_length=len(ids))
    assert [s["name"] for s in stages] == ["logits", "min_new_tokens", "sampled"]
    assert stages[0]["chosen_prob"] > 0 and stages[-1]["chosen_prob"] == 0.0
    later = funnel(logits[-1], ids + [ids[-1]] * 5, settings, sep, source.codec.eos_ids, prompt_length=len(ids))  # 5 new: allowed
    assert later[-1]["chosen_prob"] == pytest.approx(float(torch.softmax(logits[-1], -1)[sep]))
    stages = funnel(logits[-1], ids, GenerationSettings(ignore_eos=True, do_sample=False), sep, source.codec.eos_ids)
    assert [s["name"] for s in stages] == ["logits", "ignore_eos", "greedy"] and stages[-1]["chosen_prob"] == 0.0


@pytest.mark.parametrize("values, message", [
    ({"min_new_tokens": 20, "max_new_tokens": 10}, "min_new_tokens=20 is more than max_new_tokens; use at most 10"),
    ({"min_new_tokens": -1}, "min_new_tokens=-1"),
    ({"ignore_eos": "yes"}, "ignore_eos must be true or false"),
])
def test_bad_length_controls_are_refused_with_a_clear_message(values, message):
    with pytest.raises(SettingsError) as info:
        GenerationSettings.from_user(**values)
    assert message in str(info.value) and info.value.field == next(iter(values))
