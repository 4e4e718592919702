"""The notebook views' page: the bundled CSS and JavaScript inlined, the language, a fragment for Jupyter, a whole file.

Nothing here loads from a network: bertviz, Ecco and CircuitsVis fetch their JavaScript from a CDN at display time and
draw nothing offline, behind a firewall, or often from mainland China. These views carry everything they need.
"""

from __future__ import annotations

import json
import os
import uuid
from functools import cache
from html import escape
from pathlib import Path

from ..errors import PlaygroundError
from ..locales import LANGUAGES
from ..ui.render import CSS as TOKEN_VIEW_CSS

ASSETS = Path(__file__).resolve().parent / "assets"
SCOPE = "gpt2pg"  # the class of every view's root: the app's class names (.legend, .banner) style nothing else on the page


def default_language() -> str:
    """"zh-CN" when the notebook's locale is Chinese (the first of LANGUAGE, LC_ALL, LC_MESSAGES, LANG that is set
    begins with zh), else "en". A view's `lang=` overrides it."""
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name)
        if value:
            return "zh-CN" if value.lower().startswith("zh") else "en"
    return "en"


def check_language(lang: str | None) -> str:
    """`lang`, or the notebook's when None; one of LANGUAGES."""
    lang = lang or default_language()
    if lang not in LANGUAGES:
        raise PlaygroundError(key="notebook.lang", given=lang, available=", ".join(LANGUAGES))
    return lang


def scoped(css: str, scope: str = SCOPE) -> str:
    """Every rule of `css` (plain rules, no @-blocks) limited to elements inside `.scope`."""
    rules = []
    for block in css.split("}"):
        if "{" not in block:
            continue
        selectors, body = block.split("{", 1)
        assert not selectors.strip().startswith("@"), "scoped() takes plain rules only"
        rules.append(", ".join(f".{scope} {s.strip()}" for s in selectors.split(",")) + " {" + body.strip() + "}")
    return "\n".join(rules)


@cache
def asset(name: str) -> str:
    """A file of playground/notebook/assets (package data), as text."""
    return (ASSETS / name).read_text(encoding="utf-8")


@cache
def style() -> str:
    """The token view's CSS as the app has it (playground/ui/render.py), scoped, then the notebook's own."""
    return scoped(TOKEN_VIEW_CSS) + "\n" + asset("notebook.css")


def json_for_script(data) -> str:
    """`data` as JSON that is safe inside <script type="application/json"> (no "</" can end the element)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")


def fragment(body: str, lang: str, kind: str, script: str | None = None) -> str:
    """A view as Jupyter shows it: one root element with its language, its CSS, and (for views that draw with
    JavaScript) the bundled script, which finds its root as the parent of the running <script>."""
    view_id = f"{SCOPE}-{uuid.uuid4().hex[:12]}"
    code = ""
    if script:
        code = (f"<script>{asset('notebook.js')}\n"
                f"gpt2pgViews.{script}(document.currentScript ? document.currentScript.parentElement "
                f": document.getElementById({json.dumps(view_id)}));</script>")
    return (f'<div class="{SCOPE} {SCOPE}-{kind}" id="{view_id}" lang="{lang}" data-view="{kind}">'
            f"<style>{style()}</style>{body}{code}</div>")


def document(fragment_html: str, lang: str, title: str) -> str:
    """A standalone HTML file of one view: the same fragment, in a page of its own."""
    return (f'<!DOCTYPE html>\n<html lang="{lang}">\n<head>\n<meta charset="utf-8">\n<title>{escape(title)}</title>\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n</head>\n'
            f'<body style="margin:16px;background:#fff">\n{fragment_html}\n</body>\n</html>\n')


class View:
    """Something a notebook shows inline (`_repr_html_`) and saves as a standalone page (`save_html`)."""

    lang: str
    kind: str = "view"

    def body_html(self) -> str:
        raise NotImplementedError

    script: str | None = None  # the name of the function of assets/notebook.js that draws the view, if one does

    def title(self) -> str:
        return f"gpt2-playground · {self.kind}"

    def html(self) -> str:
        """The view as one self-contained HTML fragment (what Jupyter shows)."""
        return fragment(self.body_html(), self.lang, self.kind, self.script)

    def _repr_html_(self) -> str:
        return self.html()

    def save_html(self, path: str | Path) -> Path:
        """Write the view as a standalone HTML file that opens offline in any browser; returns the path."""
        path = Path(path)
        path.write_text(document(self.html(), self.lang, self.title()), encoding="utf-8")
        return path
