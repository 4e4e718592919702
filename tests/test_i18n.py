"""The interface's strings in English and Simplified Chinese: same keys, same placeholders, the language of a
request, and domain errors shown in Chinese in the UI while the API keeps English."""

import ast
import re
import string
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from playground.config import GenerationSettings, check_prompt
from playground.errors import SettingsError
from playground.ui.generate_tab import settings_from_ui
from playground.ui.i18n import EN, STRINGS, ZH_CN, error_text, lang_of, language_of_header, placeholders, t, translated

UI_FILES = sorted((Path(__file__).resolve().parent.parent / "playground" / "ui").glob("*_tab.py")) + [
    Path(__file__).resolve().parent.parent / "playground" / "ui" / "app.py"]


def test_both_languages_have_the_same_keys():
    assert set(EN) == set(ZH_CN)
    assert list(STRINGS) == ["en", "zh-CN"]


@pytest.mark.parametrize("key", sorted(EN))
def test_both_languages_have_the_same_placeholders(key):
    assert placeholders(EN[key]) == placeholders(ZH_CN[key]), key
    assert ZH_CN[key].strip(), key


def test_every_key_the_ui_uses_exists():
    used = set()
    for path in UI_FILES:
        used |= set(re.findall(r'(?:translated|t)\(\s*f?"([a-z_]+\.[a-z_.]+)"', path.read_text()))
    assert used, "no keys found: did the call names change?"
    assert used <= set(EN), sorted(used - set(EN))


PACKAGE = Path(__file__).resolve().parent.parent / "playground"


def _keyed_calls():
    """(where, key, keyword names) of every error or notice made with a literal key="..." in playground/."""
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", "")
            keywords = {k.arg: k.value for k in node.keywords}
            key = keywords.get("key")
            if (name.endswith("Error") or name in ("Notice", "TrainingCancelled")) and isinstance(key, ast.Constant):
                yield f"{path.relative_to(PACKAGE.parent)}:{node.lineno}", key.value, set(keywords)


def test_every_key_an_error_or_notice_uses_exists():
    calls = list(_keyed_calls())
    assert len(calls) > 50, "no keyed calls found: did the error classes change?"
    assert not [(where, key) for where, key, _ in calls if key not in EN]


def test_every_keyed_call_passes_exactly_its_templates_parameters():
    """A message is only rendered when it is raised: a missing parameter would turn an error into a KeyError there.
    `key` and `field` are the error's own keywords, so no template may use them as placeholders."""
    problems = []
    for where, key, given in _keyed_calls():
        if key not in EN or None in given:  # None: a **mapping, checked where it is built
            continue
        wanted = {name for _, name, _, _ in string.Formatter().parse(EN[key]) if name is not None}
        if wanted != given - {"key", "field"} or wanted & {"key", "field"}:
            problems.append((where, key, sorted(wanted), sorted(given - {"key", "field"})))
    assert not problems


def test_chinese_text_is_chinese_and_keeps_product_names():
    assert t("app.tab.generate", "zh-CN") == "生成"
    assert t("generate.temperature", "zh-CN") == "温度"
    assert "Top-k" in t("generate.top_k", "zh-CN")
    # One word for "token" everywhere: 词元, never a mix with 标记 or 令牌.
    assert not any(word in text for text in ZH_CN.values() for word in ("标记", "令牌"))


def test_t_fills_parameters_and_falls_back_to_english():
    assert t("compare.max_diff", "zh-CN", diff=0.123456) == "在此之前，所选词元概率的最大差值：**0.1235**。"
    assert t("history.exported", "fr", count=3) == "Exported 3 runs."  # a language we do not have


def test_translated_refuses_an_unknown_key():
    assert "generate.prompt" in str(translated("generate.prompt"))
    with pytest.raises(KeyError):
        translated("generate.no_such_label")


@pytest.mark.parametrize(
    "header, lang",
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
        ("zh", "zh-CN"),
        ("zh-Hans-CN", "zh-CN"),
        ("zh-SG", "zh-CN"),
        ("zh-TW,zh;q=0.9", "zh-CN"),  # Simplified beats English for a Traditional reader
        ("zh-HK", "zh-CN"),
        ("ZH-cn", "zh-CN"),
        ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
        ("en;q=0.5, zh-CN;q=0.9", "zh-CN"),  # q-values, not order, rank the languages
        ("zh-CN;q=0, en", "en"),  # q=0: not acceptable
        ("fr-FR,zh-CN;q=0.5", "en"),  # the browser shows a French user English labels, so the server does too
        ("*", "en"),
        ("", "en"),
        (None, "en"),
        ("garbage;;;q=abc", "en"),
    ],
)
def test_language_of_an_accept_language_header(header, lang):
    assert language_of_header(header) == lang


def test_lang_of_a_request():
    assert lang_of(SimpleNamespace(headers={"accept-language": "zh-CN,zh;q=0.9"})) == "zh-CN"
    assert lang_of(SimpleNamespace(headers={})) == "en"
    assert lang_of(None) == "en"


UI_SETTINGS = dict(max_new_tokens=16, do_sample=True, temperature=1.0, top_k=50, top_p=1.0, typical_p=1.0,
                   repetition_penalty=1.0, no_repeat_ngram_size=0, stop_sequences="", seed="", top_alternatives=10)


def test_a_settings_error_is_chinese_at_the_ui_boundary():
    with pytest.raises(gr.Error) as caught:
        settings_from_ui(UI_SETTINGS | {"temperature": 0}, lang="zh-CN")
    assert caught.value.message == "温度（temperature） = 0.0 超出范围，允许的范围是 (0, 100]。"


def test_a_settings_error_stays_english_for_english_and_in_the_domain():
    with pytest.raises(gr.Error) as caught:
        settings_from_ui(UI_SETTINGS | {"temperature": 0})
    with pytest.raises(SettingsError) as domain:
        GenerationSettings.from_user(temperature=0)
    assert caught.value.message == str(domain.value) == "temperature=0.0 is out of range; allowed: (0, 100]."


def _settings_errors():
    """One of each keyed error the settings raise."""
    cases = [
        lambda: GenerationSettings.from_user(temprature=1),
        lambda: GenerationSettings.from_user(top_p=2),
        lambda: GenerationSettings.from_user(stop_sequences=["a"] * 9),
        lambda: GenerationSettings.from_user(stop_sequences=["x" * 201]),
        lambda: GenerationSettings().validate_for_context(64),
        lambda: GenerationSettings.from_user(top_k=1.5),
        lambda: GenerationSettings.from_user(temperature="hot"),
        lambda: GenerationSettings.from_user(temperature=float("nan")),
        lambda: GenerationSettings.from_user(do_sample="yes"),
        lambda: GenerationSettings.from_user(stop_sequences=5),
        lambda: check_prompt(42),
        lambda: check_prompt("x" * 200_001),
    ]
    errors = []
    for case in cases:
        with pytest.raises(SettingsError) as caught:
            case()
        errors.append(caught.value)
    return errors


def test_every_settings_error_has_a_key_whose_english_is_its_message_and_a_chinese_text():
    for exc in _settings_errors():
        assert exc.key in EN, exc
        params = dict(exc.params)
        assert t(exc.key, "en", **params) == str(exc)  # the English template is the domain's message
        chinese = error_text(exc, "zh-CN")
        assert chinese != str(exc) and re.search(r"[\u4e00-\u9fff]", chinese), chinese
        assert error_text(exc, "en") == str(exc)


def test_an_error_without_a_key_falls_back_to_its_english_message():
    assert error_text(SettingsError("Something else."), "zh-CN") == "Something else."
    assert error_text(ValueError("plain"), "zh-CN") == "plain"


def test_the_api_keeps_english_errors_for_a_chinese_client(launched_app):
    client = Client(launched_app, verbose=False, headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    with pytest.raises(AppError, match=re.escape("temperature=0.0 is out of range; allowed: (0, 100].")):
        client.predict(prompt="The value", max_new_tokens=4, temperature=0, api_name="/generate")


def test_launch_passes_the_strings_to_gradio_and_a_bilingual_login_message():
    from playground.ui.app import launch_kwargs
    from playground.ui.security import resolve_login

    kwargs = launch_kwargs(resolve_login("alice:correct horse", None, {}))
    assert kwargs["i18n"].translations_dict["zh-CN"] is ZH_CN
    assert kwargs["i18n"].translations_dict["en"] is EN
    assert EN["app.login"] in kwargs["auth_message"] and ZH_CN["app.login"] in kwargs["auth_message"]


def test_a_runs_notices_read_in_chinese_in_the_ui_and_stay_english_in_the_api(tiny_backend, tiny_source):
    from playground.config import GenerationSettings
    from playground.generation import generate
    from playground.ui.render import stats_markdown

    result = generate(tiny_backend, tiny_source, "word " * 80, GenerationSettings(max_new_tokens=8, seed=1))
    assert result.dropped_prompt_tokens > 0
    assert "已被丢弃" in stats_markdown(result, lang="zh-CN")
    assert result.to_dict()["notices"][0].startswith("The prompt has ")
