"""The notebook API (playground.notebook) on the tiny models: runs, their table, views that load nothing, the history."""

from __future__ import annotations

import math
import re

import pytest

from playground.errors import PlaygroundError, SettingsError


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from playground.notebook import open_model

    return open_model(str(tiny_model_dir), device="cpu", lang="en")


@pytest.fixture(scope="module")
def zh_model(tiny_zh_demo_dir):
    from playground.notebook import open_model

    return open_model(str(tiny_zh_demo_dir), device="cpu", lang="zh-CN")


@pytest.fixture(scope="module")
def run(model):
    return model.generate("Once upon a time", num_return_sequences=3, max_new_tokens=8, temperature=0.7, top_k=5, top_p=0.9,
                          seed=11)


@pytest.fixture(scope="module")
def zh_run(zh_model):
    return zh_model.generate("从前有座山，", max_new_tokens=8, seed=5)


def test_generate_draws_every_sample_with_the_settings_given(run):
    assert len(run) == 3 and len(run.texts) == 3
    assert [r.settings.seed for r in run.results] == [11, 12, 13]  # sample i: seed + i
    assert len({r.group_id for r in run.results}) == 1
    for result in run.results:
        assert (result.settings.temperature, result.settings.top_k, result.settings.top_p) == (0.7, 5, 0.9)
        assert 1 <= len(result.tokens) <= 8
        # top-k 5 reached the loop: every sampled token is among the model's five most likely
        assert all(1 <= record.rank <= 5 for record in result.tokens)


def test_a_setting_out_of_range_is_refused_with_its_range(model):
    with pytest.raises(SettingsError, match=r"top_p.*\(0, 1\]|\(0, 1\].*top_p"):
        model.generate("Once", top_p=5)
    with pytest.raises(SettingsError, match="Unknown setting.*temprature"):
        model.generate("Once", temprature=0.5)


def test_the_dataframe_has_a_row_per_token_with_the_records_numbers(run):
    frame = run.to_dataframe()
    records = [(i, r) for i, result in enumerate(run.results) for r in result.prompt_tokens + result.tokens]
    assert len(frame) == len(records)
    for (sample, record), row in zip(records, frame.itertuples()):
        assert (row.sample, row.position, row.token_id, row.is_prompt) == (sample, record.position, record.token_id, record.is_prompt)
        if record.raw_prob is None:
            assert row.surprisal_bits is None or math.isnan(row.surprisal_bits)
        else:
            assert row.raw_prob == record.raw_prob and row.surprisal_bits == pytest.approx(-math.log2(record.raw_prob))
    assert str(frame["rank"].dtype) == "Int64"


def _views(run, zh_run):
    inside, zh_inside = run.inside(), zh_run.inside()
    return {
        "run": (run, "en"), "tokens-rank": (run.tokens(mode="rank"), "en"), "attention": (run.attention(), "en"),
        "inside": (inside, "en"), "prediction": (inside.at(6, temperature=0.5, top_k=3), "en"), "grid": (inside.grid(), "en"),
        "zh-run": (zh_run, "zh-CN"), "zh-attention": (zh_run.attention(), "zh-CN"), "zh-inside": (zh_inside, "zh-CN"),
    }


def test_every_view_inlines_its_script_and_style_and_references_nothing_remote(run, zh_run):
    for name, (view, lang) in _views(run, zh_run).items():
        html = view._repr_html_()
        assert f'lang="{lang}"' in html, name
        for tag in re.findall(r"<(?:script|style|link|img|iframe)\b[^>]*>", html, re.I):
            assert not re.search(r"\b(?:src|href)\s*=", tag, re.I), (name, tag)  # nothing fetched, not even locally
        for kind, attributes, code in re.findall(r"<(script|style)\b([^>]*)>(.*?)</\1>", html, re.I | re.S):
            if "application/json" in attributes:  # the view's data (token texts may hold anything), not code
                continue
            assert not re.search(r"https?://", code, re.I), (name, kind)
            assert kind == "script" or not re.search(r"@import|url\(", code, re.I), name


def test_chinese_views_use_the_locale_files_words(zh_run):
    assert "第 0 层" in zh_run.attention()._repr_html_()
    inside = zh_run.inside()._repr_html_()
    assert "词嵌入" in inside and "残差" in inside
    assert "模型给所选词元的概率" in zh_run._repr_html_()


def test_save_html_writes_a_standalone_page(run, tmp_path):
    path = run.attention().save_html(tmp_path / "attention.html")
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and '<html lang="en">' in page and "gpt2pgViews.attention(" in page


def test_the_funnel_ends_at_the_probability_the_run_sampled_from(run):
    result = run.result
    report = run.inside().report(result.tokens[0].position)
    assert report["funnel"][-1]["chosen_prob"] == pytest.approx(result.tokens[0].prob, rel=1e-4)
    assert len(report["logit_lens"]) == run.attention().attention.n_layers + 1


def test_a_saved_run_opens_again_with_its_model(tiny_model_dir, tmp_path, monkeypatch):
    import shutil

    from playground.notebook import open_model, open_run

    root = tmp_path / "models"
    shutil.copytree(tiny_model_dir, root / "tiny-saved")
    monkeypatch.setenv("GPT2_PLAYGROUND_MODELS", str(root))
    db = tmp_path / "history.db"
    saved = open_model(str(root / "tiny-saved"), device="cpu", history=db).generate("The old house", max_new_tokens=5, seed=3)
    again = open_run(saved.run_ids[0], db=db)
    assert [r.token_id for r in again.records()] == [r.token_id for r in saved.records()]
    assert again.attention().weights.shape[-1] == len(saved.records())
    shutil.rmtree(root / "tiny-saved")  # the model is gone: the tokens still show, attention says why it cannot
    gone = open_run(saved.run_ids[0], db=db)
    assert "tokview" in gone._repr_html_()
    with pytest.raises(PlaygroundError, match="tiny-saved.*cannot be opened here"):
        gone.attention()


def test_a_run_id_not_in_the_history_is_refused(tmp_path):
    from playground.notebook import open_run

    with pytest.raises(PlaygroundError, match="not in the history"):
        open_run(12345, db=tmp_path / "empty.db")


@pytest.mark.parametrize("variables, lang", [({"LANG": "zh_CN.UTF-8"}, "zh-CN"), ({"LANG": "en_US.UTF-8"}, "en"),
                                             ({"LANGUAGE": "zh_TW", "LANG": "en_US.UTF-8"}, "zh-CN"), ({}, "en")])
def test_the_views_language_follows_the_notebooks_locale(monkeypatch, variables, lang):
    from playground.notebook import default_language

    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert default_language() == lang


def test_a_bad_language_or_colour_mode_says_what_to_pass(run):
    with pytest.raises(PlaygroundError, match="zh-CN"):
        run.tokens(lang="fr")
    with pytest.raises(PlaygroundError, match="rank"):
        run.tokens(mode="gltr")
    with pytest.raises(PlaygroundError, match="samples 0 to 2"):
        run.attention(sample=3)
