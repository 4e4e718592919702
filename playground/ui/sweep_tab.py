"""The Sweep tab: a grid over two settings (N samples per cell, a heatmap of each cell's numbers and its texts on demand), or
decoding strategies side by side (a column each: a table of their numbers, a bar chart of one, their texts)."""

from __future__ import annotations

import threading
from html import escape

import gradio as gr

from ..errors import PlaygroundError
from ..service import Playground
from ..analysis.sweep import (AXES, DEFAULT_STRATEGIES, DETERMINISTIC, METRICS, STRATEGIES, STRATEGY_METRICS, STRATEGY_VALUES,
                              StrategiesState, SweepState, plan_strategies, plan_sweep, run_strategies, run_sweep)
from ..config import SETTING_NAMES
from .generate_tab import example_prompt, follow_model_language, settings_from_ui
from .i18n import STOP_EVENT, info, lang_of, localize_on_load, t, translated, ui_error
from .render import samples_html, token_view_html

MODES = ("grid", "strategies")


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


def status_text(state: SweepState | StrategiesState | None, lang: str, running: bool = False) -> str:
    """A grid's or the strategies' status line: progress, stopped, or finished with the history group."""
    if state is None:
        return ""
    keys = "sweep.strategies_" if isinstance(state, StrategiesState) else "sweep."
    done, total = state.counts
    if state.stopped:
        return t(f"{keys}stopped", lang, done=done, total=total, group=state.group_id)
    if running and not state.done:
        return t(f"{keys}progress", lang, done=done, total=total, tokens=state.plan.total_tokens)
    return t(f"{keys}finished", lang, done=done, group=state.group_id)


def mode_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(f"sweep.mode.{m}", lang), m) for m in MODES]


def strategy_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(f"sweep.kind.{k}", lang), k) for k in STRATEGIES]


def strategy_metric_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(f"sweep.metric.{m}", lang), m) for m in STRATEGY_METRICS]


def format_metric(name: str, value) -> str:
    if value is None:
        return "–"
    if name in ("wall_ms", "ms_per_token"):
        return f"{value:.1f}"
    return f"{value:.2f}" if name in ("perplexity", "mean_tokens", "mean_logprob", "mean_entropy_bits") else f"{value:.3f}"


def header_html(label: str) -> str:
    """A column's name, escaped, that wraps between words but not inside one ("top-k" at its hyphen)."""
    return " ".join(f'<span class="nw">{escape(word)}</span>' for word in label.split(" "))


def strategies_table_html(state: StrategiesState | None, lang: str = "en") -> str:
    """The numbers of the finished strategies: a column each, a row per number (escaped; "–" where one does not apply)."""
    if state is None or not state.columns:
        return ""
    head = "".join(f"<th>{header_html(c.strategy.label(lang))}</th>" for c in state.columns)
    rows = []
    for metric in STRATEGY_METRICS:
        cells = "".join(f"<td>{format_metric(metric, c.metrics.get(metric))}</td>" for c in state.columns)
        rows.append(f'<tr data-metric="{metric}"><th scope="row">{escape(t(f"sweep.metric.{metric}", lang))}</th>{cells}</tr>')
    return (f'<div class="strategies-table"><table><thead><tr><th>{escape(t("sweep.table_metric", lang))}</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def strategies_texts_html(state: StrategiesState | None, lang: str = "en") -> str:
    """Each finished strategy's text(s) side by side, a column each: its name, what it drew, each sample's token view."""
    if state is None or not state.columns:
        return ""
    columns = []
    for column in state.columns:
        strategy = column.strategy
        drew = (t("sweep.column_deterministic", lang) if strategy.kind in DETERMINISTIC
                else t("sweep.column_samples", lang, count=len(column.results)))
        meta = " · ".join([drew, t("samples.ppl", lang, value=format_metric("perplexity", column.metrics.get("perplexity")))])
        views = "".join(token_view_html(result, include_prompt=False, lang=lang) for result in column.results)
        columns.append(f'<div class="sample strategy" data-strategy="{escape(strategy.kind)}">'
                       f'<h4>{escape(strategy.label(lang))}</h4><div class="meta">{escape(meta)}</div>{views}</div>')
    return f'<div class="samples strategies">{"".join(columns)}</div>'


def strategies_figure(state: StrategiesState | None, metric: str, lang: str = "en"):
    """One number per finished strategy as bars, in the columns' order."""
    import plotly.graph_objects as go

    figure = go.Figure()
    if state is not None and state.columns:
        values = [c.metrics.get(metric) for c in state.columns]
        figure.add_trace(go.Bar(x=[c.strategy.label(lang) for c in state.columns], y=values, marker_color="#4f46e5",
                                text=[format_metric(metric, v) for v in values], textposition="outside", cliponaxis=False))
        # Perplexity spans orders of magnitude between greedy and a hot temperature: on a log axis both stay readable.
        figure.update_layout(xaxis_type="category")
        if metric == "perplexity":
            figure.update_yaxes(type="log", dtick=1)
    figure.update_layout(height=320, margin={"l": 50, "r": 20, "t": 40, "b": 60}, title=t(f"sweep.metric.{metric}", lang))
    return figure


def build_sweep_tab(playground: Playground, generate_inputs: dict) -> None:
    """Lay out the tab; the settings not swept (and the model and backend) are the Generate tab's."""
    stop_events: dict[str, threading.Event] = {}  # per browser session: the running sweep's Stop
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            mode = gr.Radio(mode_choices("en"), value="grid", label=translated("sweep.mode"), elem_id="sweep-mode")
            with gr.Column(visible=True) as grid_help:
                gr.Markdown(translated("sweep.help"))
            with gr.Column(visible=False) as strategies_help:
                gr.Markdown(translated("sweep.strategies_help"))
            prompt = gr.Textbox(label=translated("generate.prompt"), value=example_prompt(playground.source.codec, "en"), lines=3,
                                elem_id="sweep-prompt")
            with gr.Column(visible=True) as grid_inputs:
                with gr.Row():
                    x_name = gr.Dropdown(axis_choices("en"), value="temperature", label=translated("sweep.x"), elem_id="sweep-x")
                    x_values = gr.Textbox("0.5, 1.0, 1.5", label=translated("sweep.values"), max_lines=1, elem_id="sweep-x-values")
                with gr.Row():
                    y_name = gr.Dropdown(axis_choices("en"), value="top_p", label=translated("sweep.y"), elem_id="sweep-y")
                    y_values = gr.Textbox("0.5, 0.9, 1.0", label=translated("sweep.values"), max_lines=1, elem_id="sweep-y-values")
            with gr.Column(visible=False) as strategy_inputs:
                strategies = gr.CheckboxGroup(strategy_choices("en"), value=list(DEFAULT_STRATEGIES), label=translated("sweep.strategies"),
                                              info=translated("sweep.strategies_info"), elem_id="sweep-strategies")
                value_boxes = {}
                for row in (("beams", "top_k", "top_p"), ("typical_p", "alpha", "contrastive_k")):
                    with gr.Row():
                        for key in row:
                            preset = STRATEGY_VALUES[key][2]
                            value_boxes[key] = gr.Number(preset, label=translated(f"sweep.value.{key}"), min_width=120,
                                                         precision=0 if isinstance(preset, int) else None,
                                                         elem_id=f"sweep-value-{key.replace('_', '-')}")
                value_boxes["temperatures"] = gr.Textbox(STRATEGY_VALUES["temperatures"][2], label=translated("sweep.value.temperatures"),
                                                         max_lines=1, elem_id="sweep-value-temperatures")
            samples = gr.Slider(1, 16, value=4, step=1, label=translated("generate.samples"), elem_id="sweep-samples")
            with gr.Column(visible=True) as grid_cap:
                gr.Markdown(translated("sweep.cap"))
            with gr.Column(visible=False) as strategies_cap:
                gr.Markdown(translated("sweep.strategies_cap"))
            with gr.Row():
                run_btn = gr.Button(translated("sweep.run"), variant="primary", elem_id="sweep-run")
                strategies_btn = gr.Button(translated("sweep.run_strategies"), variant="primary", visible=False,
                                           elem_id="sweep-run-strategies")
                stop_btn = gr.Button(translated("generate.stop"), variant="stop", elem_id="sweep-stop")
        with gr.Column(scale=3, min_width=400):
            status = gr.Markdown(elem_id="sweep-status")
            with gr.Column(visible=True) as grid_outputs:
                metric = gr.Radio(metric_choices("en"), value=METRICS[0], label=translated("sweep.metric"), elem_id="sweep-metric")
                heatmap = gr.Plot(heatmap_figure(None, METRICS[0]), elem_id="sweep-heatmap")
                cell = gr.Dropdown([], label=translated("sweep.cell"), info=translated("sweep.cell_info"), elem_id="sweep-cell")
                texts = gr.HTML("", elem_id="sweep-texts")
            with gr.Column(visible=False) as strategy_outputs:
                table = gr.HTML("", elem_id="sweep-table")
                bar_metric = gr.Dropdown(strategy_metric_choices("en"), value=STRATEGY_METRICS[0], label=translated("sweep.metric"),
                                         elem_id="sweep-bar-metric")
                bars = gr.Plot(strategies_figure(None, STRATEGY_METRICS[0]), elem_id="sweep-bars")
                columns = gr.HTML("", elem_id="sweep-columns")
    state_box = gr.State(None)
    strategies_box = gr.State(None)
    localize_on_load([prompt, x_name, y_name, metric, heatmap, mode, strategies, bar_metric, bars], lambda lang: (
        example_prompt(playground.source.codec, lang), gr.update(choices=axis_choices(lang)), gr.update(choices=axis_choices(lang)),
        gr.update(choices=metric_choices(lang)), heatmap_figure(None, METRICS[0], lang), gr.update(choices=mode_choices(lang)),
        gr.update(choices=strategy_choices(lang)), gr.update(choices=strategy_metric_choices(lang)),
        strategies_figure(None, STRATEGY_METRICS[0], lang)))

    settings_inputs = [generate_inputs[name] for name in SETTING_NAMES]
    where_inputs = [generate_inputs["backend"], generate_inputs["variant"], generate_inputs["model"]]

    def stoppable(session: str | None, lang: str, run):
        """The states of `run(stop_event)` (run_sweep or run_strategies), with this session's Stop armed meanwhile and
        a PlaygroundError shown as the UI's error."""
        stop_event = stop_events[session or ""] = threading.Event()
        try:
            yield from run(stop_event)
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        finally:
            stop_events.pop(session or "", None)

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
        state = None
        for state in stoppable(session, lang, lambda stop_event: run_sweep(
                playground, prompt_text, plan, session=session, backend=backend_name, variant=variant_name, model=model_name,
                stop_event=stop_event, owner=request.username or "")):
            choices = [(cell_label(state, c.row, c.column), i) for i, c in enumerate(state.cells)]
            yield (status_text(state, lang, running=True), heatmap_figure(state, metric_name, lang),
                   gr.update(choices=choices), state)
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

    def on_mode(chosen, grid_state, strategies_state, request: gr.Request):
        grid, side_by_side = gr.update(visible=chosen == "grid"), gr.update(visible=chosen == "strategies")
        lang = lang_of(request)  # the status line is the chosen mode's own: its last sweep, or nothing yet
        line = status_text(grid_state if chosen == "grid" else strategies_state, lang)
        return grid, side_by_side, grid, side_by_side, grid, side_by_side, grid, side_by_side, grid, side_by_side, line

    def on_strategies(request: gr.Request, prompt_text, chosen, count, backend_name, variant_name, model_name, metric_name,
                      *values):
        # Gradio fills `request` only before *values: the strategies' values (value_boxes' order), then the Generate
        # tab's settings (SETTING_NAMES order).
        lang = lang_of(request)
        settings = settings_from_ui(dict(zip(SETTING_NAMES, values[len(value_boxes):])), lang)
        session = request.session_hash if request else None
        try:
            plan = plan_strategies(settings, chosen, dict(zip(value_boxes, values[:len(value_boxes)])), count)
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        state = None
        for state in stoppable(session, lang, lambda stop_event: run_strategies(
                playground, prompt_text, plan, session=session, backend=backend_name, variant=variant_name, model=model_name,
                stop_event=stop_event, owner=request.username or "")):
            # The chart is drawn once, at the end (a plot per column costs more than the table and texts).
            yield (status_text(state, lang, running=True), strategies_table_html(state, lang), gr.skip(),
                   strategies_texts_html(state, lang), state)
        if state is not None:
            yield status_text(state, lang), gr.skip(), strategies_figure(state, metric_name, lang), gr.skip(), state

    def on_bar_metric(metric_name, state, request: gr.Request):
        return strategies_figure(state, metric_name, lang_of(request))

    follow_model_language(playground, generate_inputs["model"], prompt)  # the sweep runs on the Generate tab's model
    run_btn.click(on_run, inputs=[prompt, x_name, x_values, y_name, y_values, samples, *where_inputs, metric, *settings_inputs],
                  outputs=[status, heatmap, cell, state_box], api_visibility="private", concurrency_id="generate",
                  concurrency_limit=playground.runs_at_once)
    stop_btn.click(on_stop, inputs=None, outputs=None, api_visibility="private", **STOP_EVENT)
    cell.input(on_cell, inputs=[cell, state_box], outputs=texts, queue=False, api_visibility="private")
    metric.change(on_metric, inputs=[metric, state_box], outputs=heatmap, queue=False, api_visibility="private")
    mode.change(on_mode, inputs=[mode, state_box, strategies_box],
                outputs=[grid_help, strategies_help, grid_inputs, strategy_inputs, grid_cap, strategies_cap, run_btn, strategies_btn,
                         grid_outputs, strategy_outputs, status],
                queue=False, api_visibility="private")
    strategies_btn.click(on_strategies, inputs=[prompt, strategies, samples, *where_inputs, bar_metric, *value_boxes.values(),
                                                *settings_inputs],
                         outputs=[status, table, bars, columns, strategies_box], api_visibility="private", concurrency_id="generate",
                         concurrency_limit=playground.runs_at_once)
    bar_metric.change(on_bar_metric, inputs=[bar_metric, strategies_box], outputs=bars, queue=False, api_visibility="private")
