"""How a request picks its language, and the UI's ways of showing the strings of `playground/locales`.

Gradio 6.17.3 translates in the browser (from `navigator.language`) only some props: a component's
`label`, `info`, `placeholder`, a Button's and a Markdown's `value`, Tab and Accordion labels, given as
`translated(key)`. It does not translate choice labels, Dataframe headers, gr.Info/Warning/Error
messages, HTML or plot text: those the server renders with `t(key, lang_of(request))`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr
from gradio.context import Context

from ..locales import EN, LANGUAGES, STRINGS, ZH_CN, error_text, placeholders, text

__all__ = ["EN", "LANGUAGES", "STRINGS", "ZH_CN", "error_text", "placeholders"]

# The browser picks a locale from navigator.language among Gradio's own languages only (zh-CN and
# zh-TW among them, not zh, zh-HK or zh-SG), so Traditional-Chinese browsers get the Simplified text too.
I18N = gr.I18n(en=EN, **{"zh-CN": ZH_CN, "zh-TW": ZH_CN})

# Gradio does not translate the login page's message: both languages in one string.
AUTH_MESSAGE = f"{EN['app.login']} {ZH_CN['app.login']}"


def translated(key: str) -> Any:
    """A label, info, placeholder, Button or Markdown value (Tab and Accordion labels too) that the browser shows
    in its language. Fails here, at build time, on a key that does not exist."""
    if key not in EN:
        raise KeyError(f"no UI string {key!r} in playground/locales/en.json")
    return I18N(key)


t = text  # the UI's short name for it


_LANGUAGE_RANGE = re.compile(r"^\s*([A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q\s*=\s*([0-9.]+))?", re.ASCII)


def language_of_header(accept_language: str | None) -> str:
    """"zh-CN" when the most preferred language of an Accept-Language header is any Chinese (zh, zh-CN,
    zh-Hans, zh-SG, zh-TW, zh-HK: Simplified beats English for all of them), else "en".

    Only the most preferred language counts, as in the browser, which shows Gradio's labels in the
    language of `navigator.language` (the first of the list) with English for anything we lack: a
    "fr-FR, zh-CN;q=0.5" page is English there, so the server's text is English too.
    """
    ranked = []
    for order, part in enumerate((accept_language or "").split(",")):
        match = _LANGUAGE_RANGE.match(part)
        if not match or match.group(1) == "*":
            continue
        try:
            q = float(match.group(2)) if match.group(2) is not None else 1.0
        except ValueError:
            continue
        if q > 0:
            ranked.append((-q, order, match.group(1).lower()))
    if not ranked:
        return "en"
    tag = min(ranked)[2]
    return "zh-CN" if tag == "zh" or tag.startswith("zh-") else "en"


def lang_of(request: gr.Request | None) -> str:
    """The language of the browser that sent `request` ("en" when there is no request, as in the API)."""
    if request is None:
        return "en"
    headers = getattr(request, "headers", None) or {}
    return language_of_header(headers.get("accept-language"))


def ui_error(exc: Exception, request_or_lang: gr.Request | str | None) -> gr.Error:
    """The gr.Error that shows a domain error in the browser's language: `raise ui_error(exc, request) from None`.
    The message says what to fix, so the server's log gets no traceback (Gradio prints one for every gr.Error
    unless told not to); a fault that is no PlaygroundError never comes through here and keeps its traceback."""
    lang = request_or_lang if isinstance(request_or_lang, str) else lang_of(request_or_lang)
    return gr.Error(error_text(exc, lang), print_exception=False)


def error(key: str, lang: str, **params: Any) -> gr.Error:
    """The UI's own error, in `lang`: `raise error("history.select_first", lang)`; like `ui_error`, no traceback.

    (Gradio 6.17.3 heads every notice with its untranslated type, "Error", "Warning" or "Info", and
    shows no `title`, so none is given.)"""
    return gr.Error(t(key, lang, **params), print_exception=False)


def warning(key: str, lang: str, **params: Any) -> None:
    """Show a warning notice in `lang`."""
    gr.Warning(t(key, lang, **params))


def info(key: str, lang: str, **params: Any) -> None:
    """Show an information notice in `lang`. Only an event that goes through the queue can: Gradio 6.17 prints the
    notice of a `queue=False` event to the server's console instead (helpers.log_message), so an event that answers
    with a notice is wired with STOP_EVENT or queued otherwise."""
    gr.Info(t(key, lang, **params))


# A Stop or Cancel button's event: queued, so that its notice ("Cancelling...", "Nothing is running") reaches the page,
# in a group of its own without a limit, so that it runs at once beside the work it stops.
STOP_EVENT = dict(concurrency_id="stop", concurrency_limit=None, show_progress="hidden")


def localize_on_load(outputs: Sequence[Any], render: Callable[..., Any], with_request: bool = False) -> None:
    """Fill `outputs` with `render(lang)` when a page loads, in that browser's language: for the text the browser
    does not translate itself (choice labels, Dataframe headers, HTML, text with numbers in it). Call it
    inside the Blocks, after the components; `localize_page` then makes one load event of all of them.
    `with_request`: `render(lang, request)`, for a view that depends on who is logged in."""
    root = Context.root_block
    root.__dict__.setdefault("_localizers", []).append((list(outputs), render, with_request))


def localize_page(demo: gr.Blocks, ready: gr.HTML, tabs: gr.Tabs | None = None, tab_ids: tuple[str, ...] = ()) -> None:
    """One load event that fills every output given to `localize_on_load` in the browser's language (one request
    instead of one per tab), then puts `<span id="page-ready" data-lang="...">` in `ready`: the sign that the page
    holds its own language's values, which anything driving the page (the browser tests) waits for.

    A part that fails to render (its view's data unreadable, say) leaves only its own outputs as they were: the error
    goes to the server's log with its traceback, the page still becomes ready, and `data-failed` on the sign names
    what failed, instead of one broken view leaving the whole page unfilled.

    With `tabs`, the same answer selects the tab this browser chose last (REMEMBERED_TAB_JS), one of `tab_ids`, or
    FIRST_TAB for a browser that never chose one."""
    import sys
    import traceback
    from html import escape

    localizers = demo.__dict__.pop("_localizers", [])
    outputs = [component for components, _, _ in localizers for component in components]

    chosen_tab = gr.Textbox(visible=False) if tabs is not None else None

    def on_load(*args):
        chosen, request = (args[0], args[1]) if tabs is not None else (None, args[0])
        lang = lang_of(request)
        values, failed = [], []
        for components, render, with_request in localizers:
            try:
                value = render(lang, request) if with_request else render(lang)
            except Exception as exc:  # noqa: BLE001 - logged and named on the page; the other views still fill
                print(f"The page's {getattr(render, '__qualname__', render)} failed to render:", file=sys.stderr, flush=True)
                traceback.print_exc()
                failed.append(f"{type(exc).__name__}: {exc}")
                value = [gr.skip()] * len(components) if len(components) > 1 else gr.skip()
            values.extend(value if len(components) > 1 else [value])
        marks = f' data-failed="{escape(" | ".join(failed))}"' if failed else ""
        selected = [gr.Tabs(selected=chosen if chosen in tab_ids else FIRST_TAB)] if tabs is not None else []
        return [*values, *selected, f'<span id="page-ready" data-lang="{lang}"{marks}></span>']

    def with_request(chosen: str, request: gr.Request):
        return on_load(chosen, request)

    def without(request: gr.Request):
        return on_load(request)

    if tabs is None:
        demo.load(without, inputs=None, outputs=[*outputs, ready], queue=False, show_progress="hidden", api_visibility="private")
    else:
        demo.load(with_request, inputs=[chosen_tab], outputs=[*outputs, tabs, ready], queue=False, show_progress="hidden",
                  api_visibility="private", js=REMEMBERED_TAB_JS)


TAB_KEY = "gpt2pg.tab"  # the browser's localStorage key of the tab it last chose
FIRST_TAB = "learn"  # where a browser that never chose a tab begins: the guided path
# Runs in the browser as the page loads: it hands the load request the tab this browser chose last ("" for none), whose
# answer selects it (with the sign that the page is ready, so nothing drives the page before), and from then on
# remembers every choice. Tab buttons carry their tab's id (data-tab-id) in the role=tablist row.
REMEMBERED_TAB_JS = f"""(chosen) => {{
    document.addEventListener("click", (event) => {{
        const tab = event.target.closest && event.target.closest("[role=tablist] button[data-tab-id]");
        if (tab) {{ try {{ window.localStorage.setItem("{TAB_KEY}", tab.dataset.tabId); }} catch (error) {{}} }}
    }}, true);
    try {{ return [window.localStorage.getItem("{TAB_KEY}") || ""]; }} catch (error) {{ return [""]; }}
}}"""
