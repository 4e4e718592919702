"""Every string a user reads, in English and Simplified Chinese, kept as data: one JSON file per language.

Keys are "<area>.<name>" (areas avoid Gradio's own namespaces, common, errors, label, login, plot,
dropdown, ..., which share the browser-side dictionary with these). Values are `str.format` templates.
The domain (errors, notices) and the UI both read them from here, so English is written once.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

LANGUAGES = ("en", "zh-CN")
_FOLDER = Path(__file__).resolve().parent


def _load(lang: str) -> dict[str, str]:
    with open(_FOLDER / f"{lang}.json", encoding="utf-8") as f:
        return json.load(f)


STRINGS: dict[str, dict[str, str]] = {lang: _load(lang) for lang in LANGUAGES}
EN, ZH_CN = STRINGS["en"], STRINGS["zh-CN"]


def text(key: str, lang: str = "en", **params: Any) -> str:
    """The string `key` in `lang` (English for a language we do not have), with `params` filled in."""
    return STRINGS.get(lang, EN)[key].format(**params)


def placeholders(template: str) -> set[str]:
    """The `{fields}` of a template, conversion and format spec included, e.g. {"{value!r}", "{diff:.4f}"}."""
    fields = set()
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is not None:
            fields.add("{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}")
    return fields


def error_text(exc: Exception, lang: str) -> str:
    """A domain error's message for a reader (the UI, a notebook): translated when it carries a known key, else its own
    (English) text.

    The `name` parameter, a setting's name, is shown the way that language names the setting.
    """
    key, params = getattr(exc, "key", None), dict(getattr(exc, "params", None) or {})
    if lang == "en" or not key or key not in STRINGS.get(lang, {}):
        return str(exc)
    if f"setting.{params.get('name')}" in STRINGS[lang]:
        params["name"] = text(f"setting.{params['name']}", lang)
    try:
        return text(key, lang, **params)
    except (KeyError, IndexError, ValueError):  # a key raised with other parameters than the template's
        return str(exc)
