"""The Sweep tab: a grid over two settings, N samples per cell, a heatmap of each cell's numbers and its texts on demand."""

from __future__ import annotations

import threading
from html import escape

import gradio as gr

from ..errors import PlaygroundError
from ..service import Playground
from ..analysis.sweep import AXES, METRICS, SweepState, plan_sweep, run_sweep
from ..config import SETTING_NAMES
from .generate_tab import example_prompt, follow_model_language, settings_from_ui
from .i18n import info, lang_of, localize_on_load, t, translated, ui_error
from .render import samples_html


def metric_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(f"sweep.metric.{m}", lang), m) for m in METRICS]


def axis_choices(lang: str) -> list[tuple[str, str]]:
    """The settings a sweep can vary, named as `lang` names them (the Chinese names keep the setting's own name)."""
    return [(t(f"setting.{name}", lang), name) for name in AXES]


def cell_label(state: SweepState, row: int, column: int) -> str:
    plan = state.plan
    return f"{plan.x_name}={plan.x_values[column]} · {plan.y_name}={plan.y_values[row]}"


def heatmap_figure(state: SweepState | None, metric: str, lang: str = "en"):
    """The metric per cell, x values across and y values down, each cell labelled with its value (blank: not run)."""
    import plotly.graph_objects as go

    figure = go.Figure()
    if state is not None:
        grid = state.grid(metric)
        figure.add_trace(go.Heatmap(
            z=grid, x=[str(v) for v in state.plan.x_values], y=[str(v) for v in state.plan.y_values], colorscale="Viridis",
            texttemplate="%{z:.3f}", hovertemplate=f"{state.plan.x_name}=%{{x}}<br>{state.plan.y_name}=%{{y}}<br>%{{z:.4f}}<extra></extra>",
        ))
        figure.update_layout(xaxis_title=t(f"setting.{state.plan.x_name}", lang), yaxis_title=t(f"setting.{state.plan.y_name}", lang),
                             xaxis_type="category", yaxis_type="category")
    figure.update_layout(height=360, margin={"l": 60, "r": 20, "t": 40, "b": 50}, title=t(f"sweep.metric.{metric}", lang))
    return figure


def status_text(state: SweepState | None, lang: str, running: bool = False) -> str:
    if state is None:
        return ""
    done, total = len(state.cells), len(state.plan.cells)
    if state.stopped:
        return t("sweep.stopped", lang, done=done, total=total, group=state.group_id)
    if running and not state.done:
        return t("sweep.progress", lang, done=done, total=total, tokens=state.plan.total_tokens)
    return t("sweep.finished", lang, done=done, group=state.group_id)


def build_sweep_tab(playground: Playground, generate_inputs: dict) -> None:
    """Lay out the tab; the settings not swept (and the model and backend) are the Generate tab's."""
    stop_events: dict[str, threading.Event] = {}  # per browser session: the running sweep's Stop
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            gr.Markdown(translated("sweep.help"))
            prompt = gr.Textbox(label=translated("generate.prompt"), value=example_prompt(playground.source.codec, "en"), lines=3,
                                elem_id="sweep-prompt")
            with gr.Row():
                x_name = gr.Dropdown(axis_choices("en"), value="temperature", label=translated("sweep.x"), elem_id="sweep-x")
                x_values = gr.Textbox("0.5, 1.0, 1.5", label=translated("sweep.values"), max_lines=1, elem_id="sweep-x-values")
            with gr.Row():
                y_name = gr.Dropdown(axis_choices("en"), value="top_p", label=translated("sweep.y"), elem_id="sweep-y")
                y_values = gr.Textbox("0.5, 0.9, 1.0", label=translated("sweep.values"), max_lines=1, elem_id="sweep-y-values")
            samples = gr.Slider(1, 16, value=4, step=1, label=translated("generate.samples"), elem_id="sweep-samples")
            gr.Markdown(translated("sweep.cap"))
            with gr.Row():
                run_btn = gr.Button(translated("sweep.run"), variant="primary", elem_id="sweep-run")
                stop_btn = gr.Button(translated("generate.stop"), variant="stop", elem_id="sweep-stop")
        with gr.Column(scale=3, min_width=400):
            status = gr.Markdown(elem_id="sweep-status")
            metric = gr.Radio(metric_choices("en"), value=METRICS[0], label=translated("sweep.metric"), elem_id="sweep-metric")
            heatmap = gr.Plot(heatmap_figure(None, METRICS[0]), elem_id="sweep-heatmap")
            cell = gr.Dropdown([], label=translated("sweep.cell"), info=translated("sweep.cell_info"), elem_id="sweep-cell")
            texts = gr.HTML("", elem_id="sweep-texts")
    state_box = gr.State(None)
    localize_on_load([prompt, x_name, y_name, metric, heatmap], lambda lang: (
        example_prompt(playground.source.codec, lang), gr.update(choices=axis_choices(lang)), gr.update(choices=axis_choices(lang)),
        gr.update(choices=metric_choices(lang)), heatmap_figure(None, METRICS[0], lang)))

    settings_inputs = [generate_inputs[name] for name in SETTING_NAMES]
    where_inputs = [generate_inputs["backend"], generate_inputs["variant"], generate_inputs["model"]]

    def on_run(request: gr.Request, prompt_text, x, xs, y, ys, count, backend_name, variant_name, model_name, metric_name,
               *setting_values):
        # Gradio fills `request` only before *setting_values (the Generate tab's settings, in SETTING_NAMES order).
        lang = lang_of(request)
        settings = settings_from_ui(dict(zip(SETTING_NAMES, setting_values)), lang)
        session = request.session_hash if request else None
        try:
            plan = plan_sweep(settings, x, xs, y, ys, count)
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        stop_event = stop_events[session or ""] = threading.Event()
        state = None
        try:
            for state in run_sweep(playground, prompt_text, plan, session=session, backend=backend_name, variant=variant_name,
                                   model=model_name, stop_event=stop_event, owner=request.username or ""):
                choices = [(cell_label(state, c.row, c.column), i) for i, c in enumerate(state.cells)]
                yield (status_text(state, lang, running=True), heatmap_figure(state, metric_name, lang),
                       gr.update(choices=choices), state)
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        finally:
            stop_events.pop(session or "", None)
        if state is not None:
            yield status_text(state, lang), heatmap_figure(state, metric_name, lang), gr.skip(), state

    def on_stop(request: gr.Request):
        event = stop_events.get(request.session_hash if request else "")
        if event is None or event.is_set():
            info("generate.nothing_running", lang_of(request))
            return
        event.set()

    def on_cell(index, state: SweepState | None, mode_lang_request: gr.Request):
        if state is None or index is None or not 0 <= int(index) < len(state.cells):
            return ""
        lang = lang_of(mode_lang_request)
        chosen = state.cells[int(index)]
        head = f"<h4>{escape(cell_label(state, chosen.row, chosen.column))}</h4>"
        return head + samples_html(chosen.results, lang=lang) if len(chosen.results) > 1 else head + escape(chosen.results[0].text)

    def on_metric(metric_name, state, request: gr.Request):
        return heatmap_figure(state, metric_name, lang_of(request))

    follow_model_language(playground, generate_inputs["model"], prompt)  # the sweep runs on the Generate tab's model
    run_btn.click(on_run, inputs=[prompt, x_name, x_values, y_name, y_values, samples, *where_inputs, metric, *settings_inputs],
                  outputs=[status, heatmap, cell, state_box], api_visibility="private", concurrency_id="generate",
                  concurrency_limit=playground.runs_at_once)
    stop_btn.click(on_stop, inputs=None, outputs=None, queue=False, api_visibility="private")
    cell.input(on_cell, inputs=[cell, state_box], outputs=texts, queue=False, api_visibility="private")
    metric.change(on_metric, inputs=[metric, state_box], outputs=heatmap, queue=False, api_visibility="private")
