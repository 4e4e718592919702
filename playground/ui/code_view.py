"""The code behind a run, shown under a run (Generate, History, Learn): the transformers script that draws its tokens
and the same request to /v1 (curl, the openai SDK), with the one sentence about do_sample that the tutorials need."""

from __future__ import annotations

from html import escape
from pathlib import Path

import gradio as gr

from ..errors import PlaygroundError
from ..learn.snippet import DEFAULT_BASE_URL, run_code
from ..records import GenerationResult
from ..service import Playground
from .i18n import t, translated


def shown_location(location: str) -> str:
    """Where the script loads the model from: a hub id as it is; a folder relative to the app's folder when inside it
    (models/demo-gpt2), else by its name: a script is for the reader's machine, not a path on the server's."""
    path = Path(location)
    if not path.is_absolute() and not path.exists():
        return location  # a hub id
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.name


def base_url(request: gr.Request | None) -> str:
    """The address the page was served from, for the /v1 examples (as the browser reached it)."""
    headers = getattr(request, "headers", None) or {}
    host = headers.get("x-forwarded-host") or headers.get("host")
    if not host:
        return DEFAULT_BASE_URL
    return f"{headers.get('x-forwarded-proto') or 'http'}://{host}"


def notes_html(results: list[GenerationResult] | None, notes: tuple, lang: str) -> str:
    """The slip that makes greedy decoding of every `generate(temperature=...)`, then what this run's code cannot promise."""
    lines = [t("code.slip", lang)] + [t(key, lang, **params) for key, params in notes]
    return '<div class="code-notes">' + "".join(f"<p>{escape(line)}</p>" for line in lines) + "</div>"


def code_values(playground: Playground, results: list[GenerationResult] | None, lang: str, request: gr.Request | None = None):
    """Values for `build_code_view`'s components: (notes, transformers script, curl, openai)."""
    if not results:
        return f'<div class="code-notes"><p>{escape(t("code.none", lang))}</p></div>', "", "", ""
    try:
        source = playground.source_for(results[0].info.model)
        code = run_code(results, shown_location(source.location), source.codec, base_url(request))
    except (PlaygroundError, OSError, ValueError) as exc:  # the model is gone: say so where the code would be
        return f'<div class="code-notes"><p>{escape(t("code.unavailable", lang, error=str(exc)))}</p></div>', "", "", ""
    return notes_html(results, code.notes, lang), code.transformers, code.curl, code.openai


def build_code_view(elem_prefix: str) -> list[gr.components.Component]:
    """The code view's components (inside an Accordion the caller opens): notes, then the three pieces of code."""
    notes = gr.HTML(elem_id=f"{elem_prefix}-code-notes")
    with gr.Tabs():
        with gr.Tab("transformers"):
            script = gr.Code(language="python", label=translated("code.transformers"), interactive=False,
                             elem_id=f"{elem_prefix}-code-transformers")
        with gr.Tab("curl"):
            curl = gr.Code(language="shell", label=translated("code.curl"), interactive=False, elem_id=f"{elem_prefix}-code-curl")
        with gr.Tab("openai"):
            sdk = gr.Code(language="python", label=translated("code.openai"), interactive=False, elem_id=f"{elem_prefix}-code-openai")
    return [notes, script, curl, sdk]
