"""The Learn tab's checks on real runs of the tiny models, and its progress per owner in the history."""

from __future__ import annotations

import numpy as np

from playground.config import GenerationSettings
from playground.generation import generate, generate_samples
from playground.learn import checks
from playground.learn.chapters import CHAPTERS
from playground.locales import EN, ZH_CN


def test_every_chapter_has_its_words_and_a_real_tab_in_both_languages():
    tabs = {"generate", "attention", "inside", "compare", "sweep", "finetune", "evaluate", "benchmark", "history"}
    for chapter in CHAPTERS:
        assert chapter.tab in tabs
        keys = [f"learn.{chapter.id}.title", f"learn.{chapter.id}.body"] + ([f"learn.{chapter.id}.task"] if chapter.task else [])
        for key in keys:
            assert EN[key] and ZH_CN[key] and EN[key] != ZH_CN[key], key
        assert "$$" in EN[f"learn.{chapter.id}.body"] and "$$" in ZH_CN[f"learn.{chapter.id}.body"]  # the formula


def test_split_word_finds_a_word_cut_into_tokens(tiny_backend, tiny_source):
    settings = GenerationSettings.from_user(max_new_tokens=1, seed=1)
    cut = generate(tiny_backend, tiny_source, "Antidisestablishmentarianism 注意", settings)
    assert checks.split_word(cut).met
    whole = generate(tiny_backend, tiny_source, " the", settings)
    assert not checks.split_word(whole).met


def test_identical_samples_is_met_by_greedy_and_top_k_1_not_by_sampling(tiny_backend, tiny_source):
    def samples(**values):
        results = generate_samples(tiny_backend, tiny_source, "Once upon", GenerationSettings.from_user(max_new_tokens=12, seed=3, **values), 3)
        return [[record.token_id for record in result.tokens] for result in results]

    assert checks.identical_samples(samples(do_sample=False)).met
    assert checks.identical_samples(samples(top_k=1)).met
    sampled = checks.identical_samples(samples(temperature=2.0, top_k=0))
    assert not sampled.met and sampled.params["different"] >= 1
    assert checks.identical_samples([[1, 2]]).key == "learn.check.identical_few"


def test_not_top_choice_reads_the_ranks(tiny_backend, tiny_source):
    greedy = generate(tiny_backend, tiny_source, "Once upon", GenerationSettings.from_user(do_sample=False, max_new_tokens=8))
    assert not checks.not_top_choice(greedy).met
    hot = generate(tiny_backend, tiny_source, "Once upon", GenerationSettings.from_user(temperature=3.0, top_k=0, max_new_tokens=30, seed=2))
    assert checks.not_top_choice(hot).met


def test_the_head_checks_want_the_best_head_of_the_run():
    t = 6
    weights = np.zeros((2, 2, t, t), dtype=np.float32)
    for q in range(t):
        weights[:, :, q, : q + 1] = 1.0 / (q + 1)  # every head spreads evenly ...
        if q:
            weights[1, 0, q] = 0
            weights[1, 0, q, q - 1] = 1.0  # ... but layer 1 head 0 looks at the previous token
    weights[0, 1, 1:] = 0
    weights[0, 1, 1:, 0] = 1.0  # and layer 0 head 1 at the first token
    assert checks.previous_token_head(weights, 1, 0).met
    missed = checks.previous_token_head(weights, 0, 0)
    assert not missed.met and (missed.params["best_layer"], missed.params["best_head"]) == (1, 0)
    assert checks.first_token_head(weights, 0, 1).met
    assert not checks.first_token_head(weights, 1, 1).met


def test_early_prediction_needs_a_layer_before_the_last():
    record = type("R", (), {"text": "x"})()
    assert checks.early_prediction([{"layer": 0, "chosen_rank": 5}, {"layer": 1, "chosen_rank": 1}, {"layer": 2, "chosen_rank": 1}], record).met
    assert not checks.early_prediction([{"layer": 0, "chosen_rank": 5}, {"layer": 1, "chosen_rank": 2}, {"layer": 2, "chosen_rank": 1}], record).met


def test_progress_is_kept_per_owner(tmp_path):
    from playground.history import HistoryStore

    store = HistoryStore(tmp_path / "history.db")
    store.mark_learned("tokens", {"run_id": 1}, owner="alice")
    store.mark_learned("tokens", {"run_id": 2}, owner="alice")  # done again: one row, the newest evidence
    store.mark_learned("decoding", {"read": True})
    assert set(store.learned("alice")) == {"tokens"}
    assert set(store.learned()) == {"decoding"}  # the local user's own, not everyone's
    assert store.learned("bob") == {}
    assert HistoryStore(tmp_path / "history.db").learned("alice").keys() == {"tokens"}  # migrations run once, kept
