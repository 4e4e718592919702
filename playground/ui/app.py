"""Assemble the Gradio app from its tabs and expose the `/generate` API endpoint and the OpenAI-compatible `/v1` routes."""

from __future__ import annotations

import warnings
import inspect
import typing
from html import escape

import gradio as gr
from starlette.middleware import Middleware

from ..api import OpenAIRoutes, build_openai_app
from ..config import SETTING_NAMES, GenerationSettings
from ..errors import PlaygroundError
from ..service import Playground
from ..finetune.data import MAX_DATA_BYTES
from .attention_tab import build_attention_tab
from .bench_tab import build_bench_tab
from .compare_tab import build_compare_tab
from .evaluate_tab import build_evaluate_tab
from .experiments_tab import build_experiments_tab
from .finetune_tab import build_finetune_tab
from .generate_tab import build_generate_tab, settings_from_ui
from .history_tab import build_history_tab
from .inside_tab import build_inside_tab
from .learn_tab import build_learn_tab
from .steps_tab import build_steps_tab
from .sweep_tab import build_sweep_tab
from .i18n import AUTH_MESSAGE, FIRST_TAB, I18N, lang_of, localize_on_load, localize_page, t, translated
from .render import CSS, banner_html, session_html
from .security import Login, PasswordCheck, RouteGuard

def generate_signature() -> inspect.Signature:
    """/generate's parameters: the prompt, then every generation setting as GenerationSettings declares it (its order,
    type and default: a new setting appears here by itself), then where to run it."""
    P = inspect.Parameter
    types, defaults = typing.get_type_hints(GenerationSettings), GenerationSettings()
    parameters = [P("prompt", P.POSITIONAL_OR_KEYWORD, annotation=str)]
    for name in SETTING_NAMES:
        kind, default = types[name], getattr(defaults, name)
        if name == "stop_sequences":  # a tuple in the settings, a JSON list (or nothing) in a request
            kind, default = list[str] | None, None
        parameters.append(P(name, P.POSITIONAL_OR_KEYWORD, default=default, annotation=kind))
    parameters += [P("backend", P.POSITIONAL_OR_KEYWORD, default=None, annotation=str | None),
                   P("variant", P.POSITIONAL_OR_KEYWORD, default=None, annotation=str | None),
                   P("model", P.POSITIONAL_OR_KEYWORD, default=None, annotation=str | None),
                   P("num_return_sequences", P.POSITIONAL_OR_KEYWORD, default=1, annotation=int),
                   # Filled by Gradio, not a parameter of the API: who is logged in (the run is saved as theirs).
                   P("request", P.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request)]
    # The return type as a string, as `def generate(...) -> tuple[str, dict]` under `from __future__ import annotations`
    # gives it: Gradio then answers with one output holding [text, run], the shape /generate's callers already read.
    return inspect.Signature(parameters, return_annotation="tuple[str, dict]")


GENERATE_SIGNATURE = generate_signature()
ANALYSIS_CONCURRENCY = 2  # what does not decode (attention, Inside): two cores, more at once only slow each other


def build_demo(playground: Playground) -> gr.Blocks:
    """The whole UI, built from its dependencies (no globals), so tests can build it without launching."""
    source = playground.source
    with gr.Blocks(title="GPT-2 Playground") as demo:

        def banner(lang: str) -> str:
            html = banner_html(source.name, source.requested, source.notice, lang)
            if playground.history_disabled:
                html += f'<div class="banner warn">{escape(t("app.history_disabled", lang, reason=playground.history_disabled))}</div>'
            return f"<h2 style='margin:0'>GPT-2 Playground</h2>{html}"

        banner_box = gr.HTML(banner("en"), elem_id="banner")
        localize_on_load([banner_box], banner)
        session_banner = gr.HTML(elem_id="session-banner", visible=False)

        # The public link exists only after launch, and the user only per request.
        def show_session(request: gr.Request):
            html = session_html(demo.share_url, request.username, lang_of(request))
            return gr.update(value=html, visible=bool(html))

        demo.load(show_session, outputs=session_banner, show_progress="hidden", queue=False, api_visibility="private")
        # Learn stands first in the row, where a newcomer begins (a returning browser opens where it was: localize_page). It
        # is built last (it draws with the other tabs' functions and reads the Generate tab's run), so it is placed first
        # unrendered.
        with gr.Tabs(selected=FIRST_TAB) as tabs:
            learn_tab = gr.Tab(translated("app.tab.learn"), id="learn", render=False)
            learn_tab.render()
            with gr.Tab(translated("app.tab.generate"), id="generate"):
                generate_inputs, last_result = build_generate_tab(playground)
            with gr.Tab(translated("app.tab.steps"), id="steps"):
                build_steps_tab(playground, generate_inputs, last_result)
            with gr.Tab(translated("app.tab.attention"), id="attention") as attention_tab:
                refresh_attention = build_attention_tab(playground, last_result, attention_tab)
            with gr.Tab(translated("app.tab.inside"), id="inside") as inside_tab:
                open_inside = build_inside_tab(playground, last_result, inside_tab)
            with gr.Tab(translated("app.tab.compare"), id="compare") as compare_tab:
                compare_sides = build_compare_tab(playground, generate_inputs, compare_tab)  # {"a": (model, backend, variant), "b": ...}
            with gr.Tab(translated("app.tab.sweep"), id="sweep"):
                build_sweep_tab(playground, generate_inputs)
            with gr.Tab(translated("app.tab.finetune"), id="finetune"):
                build_finetune_tab(playground, tabs, compare_sides)
            with gr.Tab(translated("app.tab.evaluate"), id="evaluate"):
                build_evaluate_tab(playground)
            with gr.Tab(translated("app.tab.experiments"), id="experiments"):
                build_experiments_tab(playground)
            with gr.Tab(translated("app.tab.benchmark"), id="benchmark"):
                build_bench_tab(playground)
            with gr.Tab(translated("app.tab.history"), id="history"):
                build_history_tab(playground, generate_inputs, tabs, last_result, refresh_attention, open_inside)
            with learn_tab:
                build_learn_tab(playground, last_result, tabs, learn_tab)
        # The tab this browser chose last (a new one: Learn), selected with the page's first answer.
        localize_page(demo, gr.HTML("", elem_id="page-ready-box", padding=False), tabs,
                      tuple(tab.id for tab in tabs.children if isinstance(tab, gr.Tab)))

        def generate(*args, **kwargs) -> tuple[str, dict]:
            """Generate a continuation of `prompt`. Returns the generated text and the whole run as JSON:
            settings (with the seed used), metrics, and per-token records for prompt and output.
            `backend` is torch or onnx and `variant` one of fp32, fp16, int8, int4 (default: the app's).
            `model` is a folder name from the app's models folder or a hub id (default: the app's model).
            `num_return_sequences` (1 to 16) draws that many samples in one batch: sample i uses seed + i.
            The text and the JSON are then those of sample 0, and the JSON's `runs` holds every sample's
            run (each with its own seed, `group_id` and `sample_index`)."""
            call = GENERATE_SIGNATURE.bind(*args, **kwargs)
            call.apply_defaults()
            values = call.arguments
            prompt, backend, variant, model = values["prompt"], values["backend"], values["variant"], values["model"]
            num_return_sequences = values["num_return_sequences"]
            settings = settings_from_ui({name: values[name] for name in SETTING_NAMES})
            try:
                request = values["request"]
                run = playground.start(prompt, settings, backend=backend, variant=variant, model=model,
                                       num_samples=num_return_sequences, owner=(request.username if request else None) or "")
                for _ in playground.stream(run):
                    pass
            except PlaygroundError as exc:
                raise gr.Error(str(exc)) from None
            if run.num_samples == 1:
                return run.result.text, run.result.to_dict()
            runs = [result.to_dict() for result in run.results]
            return run.result.text, runs[0] | {"runs": runs}

        generate.__signature__ = GENERATE_SIGNATURE  # what Gradio reads for /generate's parameters and their types
        generate.__annotations__ = {p.name: p.annotation for p in GENERATE_SIGNATURE.parameters.values()}
        # Runs at once: as many as the decoding batch has rows (batching.py); a run beyond them waits in the queue,
        # which shows its place and an estimate of the wait.
        gr.api(generate, api_name="generate", concurrency_id="generate", concurrency_limit=playground.runs_at_once)

        def inside(
            run_id: int,
            position: int,
            layer: int = 0,
            head: int = 0,
            temperature: float | None = None,
            top_k: int | None = None,
            top_p: float | None = None,
            attribution: bool = False,
            request: gr.Request = None,
        ) -> dict:
            """Inside one prediction of a saved run: how the model arrived at the token at `position` (prompt tokens
            first, from 0) from the tokens before it, computed by the run's own model, backend and variant.
            Returns JSON with `logit_lens` (per layer, embeddings first: chosen_prob, chosen_rank, top), `funnel`
            (per sampling stage: name, survivors, chosen_prob; `temperature`, `top_k`, `top_p` override the
            run's), `residual`, `embedding`, `block` (layer `layer`, head `head`), `kv_cache`, backend and variant;
            with `attribution`, integrated gradients and gradient x input per earlier token (torch runs only)."""
            try:
                # Only the caller's own runs (an admin's, or anyone's without a login): another user's is "no such run".
                view = playground.inside_of_run(run_id, playground.viewer(request.username if request else None))
                report = view.report(position, layer, head, temperature, top_k, top_p)
                if attribution:
                    report["attribution"] = view.attribution(position)
                return report
            except PlaygroundError as exc:
                raise gr.Error(str(exc)) from None

        gr.api(inside, api_name="inside", concurrency_id="inside")
    demo.queue(default_concurrency_limit=ANALYSIS_CONCURRENCY)
    demo.openai_api = build_openai_app(playground)  # served at /v1 by OpenAIRoutes (see launch_kwargs)
    return demo


def silence_gradio_status_warning() -> None:
    """Hide the one warning Gradio 6.17.3 makes Starlette 1.x print at every queue join.

    gradio/routes.py builds its error map with `status.HTTP_422_UNPROCESSABLE_ENTITY`, a name Starlette renamed
    (to HTTP_422_UNPROCESSABLE_CONTENT) and now warns about on every use: one line in the log per click, about
    code that is not ours and cannot be fixed here. Only that message is filtered; every other warning,
    Starlette's other deprecations included, is still shown."""
    from starlette.exceptions import StarletteDeprecationWarning

    warnings.filterwarnings("ignore", message=r"'HTTP_422_UNPROCESSABLE_ENTITY' is deprecated",
                            category=StarletteDeprecationWarning)


def launch_kwargs(login: Login | None = None) -> dict:
    """Options every launch of the playground uses (the app and the tests alike): the route guard in
    front of Gradio, client-side rendering (Gradio's SSR workers bypass its login in 6.17), the login, the
    interface's English and Chinese strings (the browser's language picks one), the 20 MB upload cap.
    Called where the app starts, it also silences Gradio's one deprecation warning per queue join."""
    silence_gradio_status_warning()
    kwargs = {
        "css": CSS,
        "show_error": True,
        "ssr_mode": False,
        "i18n": I18N,
        "max_file_size": MAX_DATA_BYTES,  # uploads are the Fine-tune tab's training text only (the guard checks them too)
        # The guard first; then /v1 (the OpenAI-compatible API, behind the same login), the rest to Gradio.
        "app_kwargs": {"middleware": [Middleware(RouteGuard), Middleware(OpenAIRoutes)]},
    }
    if login is not None:
        kwargs["auth"] = PasswordCheck(login.accounts)
        kwargs["auth_message"] = AUTH_MESSAGE  # Gradio does not translate it: both languages
    return kwargs
