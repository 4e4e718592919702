"""The Inside tab: one token of a run followed through embedding, residual stream, logit lens, sampling funnel, one block, KV cache."""

from __future__ import annotations

from html import escape

import gradio as gr

from ..analysis.inside import Inside
from ..errors import PlaygroundError
from ..records import GenerationResult
from ..service import Playground
from ..text import visible_label
from .i18n import error_text, lang_of, localize_on_load, t, translated, ui_error
from .inside_html import funnel_table, layer_label, lens_table, stage_label

PLOT_MARGIN = {"l": 60, "r": 20, "t": 50, "b": 60}


def _plain(label: str) -> str:
    """A token label for plotly text (which reads a subset of HTML): whitespace shown, <, > and & escaped."""
    return escape(visible_label(label), quote=False)


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _choice_position(choice) -> int | None:
    if choice in (None, ""):
        return None
    return int(str(choice).split(":", 1)[0])


def position_choices(view: Inside, lang: str) -> tuple[list[str], str]:
    """The positions of a run that have a prediction to look into, `12: token` (prompt tokens marked), and the default:
    the first generated token (the last position when the run generated none)."""
    result, first = view.result, view.trace.first_position
    records = result.prompt_tokens + result.tokens
    prompt_mark = t("inside.prompt_mark", lang)
    choices = [f"{p}: {visible_label(view.labels[p - first])}" + (f" ({prompt_mark})" if records[p].is_prompt else "")
               for p in range(first + 1, view.run_length)]
    default = next((c for c in choices if _choice_position(c) == (result.tokens[0].position if result.tokens else -1)),
                   choices[-1])
    return choices, default


# --- figures (plotly), their words in the browser's language ------------------------------------------------------------


def embedding_figure(report: dict, view: Inside, lang: str):
    import plotly.graph_objects as go

    e = report["embedding"]
    dims = list(range(len(e["wte_first"])))
    figure = go.Figure([
        go.Bar(x=dims, y=e["wte_first"], name=t("inside.fig.wte", lang, norm=e["wte_norm"]), marker_color="#60a5fa"),
        go.Bar(x=dims, y=e["wpe_first"], name=t("inside.fig.wpe", lang, norm=e["wpe_norm"]), marker_color="#fbbf24"),
        go.Bar(x=dims, y=e["sum_first"], name=t("inside.fig.sum", lang, norm=e["sum_norm"]), marker_color="#16a34a"),
    ])
    figure.update_layout(barmode="group", height=300, margin=PLOT_MARGIN, legend={"orientation": "h", "y": -0.25},
                         title=t("inside.fig.embedding_title", lang, token=_plain(view.labels[e["position_index"]]), id=e["token_id"],
                                 index=e["position_index"] + view.trace.first_position, dims=len(dims)),
                         xaxis_title=t("inside.fig.dimension", lang))
    return figure


def residual_figure(report: dict, lang: str):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = report["residual"]
    names = [layer_label(r["layer"], lang) for r in rows]
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    figure.add_trace(go.Scatter(x=names, y=[r["norm"] for r in rows], name=t("inside.fig.residual", lang), mode="lines+markers",
                                line={"color": "#111827"}), secondary_y=False)
    if rows[-1]["attention_norm"] is not None:
        figure.add_trace(go.Bar(x=names, y=[r["attention_norm"] for r in rows], name=t("inside.fig.attention", lang),
                                marker_color="#60a5fa"), secondary_y=False)
        figure.add_trace(go.Bar(x=names, y=[r["mlp_norm"] for r in rows], name=t("inside.fig.mlp", lang), marker_color="#f97316"),
                         secondary_y=False)
    else:
        figure.add_trace(go.Bar(x=names, y=[r["added_norm"] for r in rows], name=t("inside.fig.added", lang), marker_color="#a78bfa"),
                         secondary_y=False)
    figure.add_trace(go.Scatter(x=names, y=[r["cosine_previous"] for r in rows], name=t("inside.fig.cosine", lang),
                                mode="lines+markers", line={"dash": "dot", "color": "#16a34a"}), secondary_y=True)
    figure.update_yaxes(title_text=t("inside.fig.norm", lang), secondary_y=False)
    figure.update_yaxes(title_text=t("inside.fig.cosine", lang), range=[-1.05, 1.05], secondary_y=True)
    figure.update_layout(title=t("inside.fig.residual_title", lang), height=340, margin=PLOT_MARGIN, barmode="group",
                         legend={"orientation": "h", "y": -0.2})
    return figure


def lens_figure(report: dict, view: Inside, lang: str):
    import plotly.graph_objects as go

    lens = report["logit_lens"]
    token = _plain(report["token"]["text"])
    names = [layer_label(r["layer"], lang) for r in lens]
    hover = ["<br>".join(f"{_plain(a['text'])}: {a['prob']:.4f}" for a in r["top"]) for r in lens]
    figure = go.Figure(go.Bar(x=names, y=[r["chosen_prob"] for r in lens], marker_color="#2563eb",
                              text=[f"#{r['chosen_rank']} · {_plain(r['top'][0]['text'])}" for r in lens], textposition="outside",
                              customdata=hover, hovertemplate="%{x}: %{y:.4f}<br>%{customdata}<extra></extra>"))
    figure.update_layout(title=t("inside.fig.lens_title", lang, token=token), height=320, margin=PLOT_MARGIN,
                         yaxis={"range": [0, min(1.05, 1.3 * max(r["chosen_prob"] for r in lens) + 0.02)],
                                "title": t("inside.fig.chosen_prob", lang, token=token)})
    return figure


def grid_figure(view: Inside, position: int, lang: str):
    import plotly.graph_objects as go

    grid = view.grid()
    first = view.trace.first_position
    labels = view.labels
    columns = list(range(first + 1, first + len(labels)))
    names = [layer_label(i, lang) for i in range(grid.chosen_prob.shape[0])]
    hover = [[f"{names[i]} · {columns[j]}: {_plain(labels[j + 1])} {grid.chosen_prob[i, j]:.3f} (#{grid.chosen_rank[i, j]})<br>top: "
              f"{_plain(view.codec.label(int(grid.top_ids[i, j, 0])))} {grid.top_probs[i, j, 0]:.3f}"
              for j in range(len(columns))] for i in range(len(names))]
    figure = go.Figure(go.Heatmap(z=grid.chosen_prob, x=columns, y=names, text=hover, hoverinfo="text", colorscale="Blues",
                                  zmin=0, zmax=1))
    step = max(1, -(-len(columns) * 14 // 700))
    ticks = columns[::step]
    figure.update_xaxes(tickvals=ticks, ticktext=[_plain(labels[c - first]) for c in ticks], tickangle=-60,
                        title=t("inside.fig.position", lang))
    figure.add_shape(type="rect", x0=position - 0.5, x1=position + 0.5, y0=-0.5, y1=len(names) - 0.5,
                     line={"color": "#dc2626", "width": 2})
    figure.update_layout(title=t("inside.fig.grid_title", lang), height=max(260, 60 + 28 * len(names)), margin=PLOT_MARGIN)
    return figure


def funnel_figure(report: dict, lang: str):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    stages = report["funnel"]
    names = [stage_label(s["name"], lang) for s in stages]
    token = _plain(report["token"]["text"])
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    figure.add_trace(go.Bar(x=names, y=[s["survivors"] for s in stages], name=t("inside.fig.survivors", lang), marker_color="#cbd5e1",
                            text=[s["survivors"] for s in stages], textposition="inside", insidetextanchor="start"), secondary_y=False)
    figure.add_trace(go.Scatter(x=names, y=[s["chosen_prob"] for s in stages], name=t("inside.fig.chosen_prob", lang, token=token),
                                mode="lines+markers", line={"color": "#2563eb", "width": 3}, marker={"size": 10}), secondary_y=True)
    figure.update_yaxes(type="log", title_text=t("inside.fig.survivors", lang), secondary_y=False)
    figure.update_yaxes(range=[0, 1.1], title_text=t("inside.fig.chosen_prob", lang, token=token), secondary_y=True)
    last = stages[-1]
    figure.update_layout(title=t("inside.fig.funnel_title", lang, token=token, prob=last["chosen_prob"], survivors=last["survivors"]),
                         height=340, margin=PLOT_MARGIN, legend={"orientation": "h", "y": -0.25})
    return figure


def block_figure(report: dict, view: Inside, lang: str):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    block = report["block"]
    q = block["query_index"]
    keys = list(range(q + 1))
    names = [f"{k}: {_plain(view.labels[k])}" for k in keys]
    token = _plain(view.labels[q])
    if block["scores"] is None:  # another backend: its own weights only
        figure = go.Figure(go.Bar(x=names, y=block["weights"][: q + 1], marker_color="#2563eb", name=t("inside.fig.weight", lang)))
        figure.update_layout(title=t("inside.fig.block_onnx", lang, layer=block["layer"], head=block["head"],
                                     backend=escape(block["computed_by"])), height=300, margin=PLOT_MARGIN)
        return figure
    figure = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                           subplot_titles=(t("inside.fig.score", lang), t("inside.fig.weight", lang), t("inside.fig.value", lang)))
    scores = block["scores"]
    masked = [k for k, visible in enumerate(block["mask"]) if not visible][:8]  # a few masked keys show the mask
    all_names = names + [f"{k}: {_plain(view.labels[k])}" for k in masked]
    figure.add_trace(go.Bar(x=names, y=scores[: q + 1], marker_color="#64748b", name=t("inside.fig.score", lang)), row=1, col=1)
    if masked:
        figure.add_trace(go.Bar(x=all_names[q + 1:], y=[scores[k] for k in masked], marker_color="#e5e7eb",
                                name=t("inside.fig.masked", lang)), row=1, col=1)
    figure.add_trace(go.Bar(x=names, y=block["weights"][: q + 1], marker_color="#2563eb", name=t("inside.fig.weight", lang)), row=2, col=1)
    figure.add_trace(go.Bar(x=names, y=block["weighted_value_norms"][: q + 1], marker_color="#16a34a", name=t("inside.fig.value", lang)),
                     row=3, col=1)
    step = max(1, -(-len(all_names) * 14 // 700))
    figure.update_xaxes(tickvals=all_names[::step], tickangle=-60, row=3, col=1)
    figure.update_xaxes(categoryorder="array", categoryarray=all_names)
    figure.update_layout(title=t("inside.fig.block_title", lang, layer=block["layer"], head=block["head"], token=token),
                         height=560, margin=PLOT_MARGIN, showlegend=True, legend={"orientation": "h", "y": -0.3})
    return figure


def mlp_figure(report: dict, lang: str):
    import plotly.graph_objects as go

    block = report["block"]
    if block["mlp_activations"] is None:
        return None
    top = ", ".join(f"#{n['neuron']} ({n['activation']:.2f})" for n in block["mlp_top"][:4])
    figure = go.Figure(go.Histogram(x=block["mlp_activations"], nbinsx=60, marker_color="#f97316"))
    figure.update_layout(title=t("inside.fig.mlp_title", lang, layer=block["layer"], count=len(block["mlp_activations"]), top=top),
                         height=280, margin=PLOT_MARGIN, xaxis_title=t("inside.fig.activation", lang),
                         yaxis={"type": "log", "title": t("inside.fig.count", lang)})
    return figure


def kv_markdown(report: dict, lang: str) -> str:
    kv = report["kv_cache"]
    lines = [f"| {t('inside.col.layer', lang)} | {t('inside.col.keys', lang)} | {t('inside.col.values', lang)} | {t('inside.col.bytes', lang)} |",
             "|---|---|---|---|"]
    elements = 0
    for layer in kv["layers"]:
        count = 1
        for d in layer["key_shape"]:
            count *= d
        elements += 2 * count
        lines.append(f"| {layer['layer']} | {tuple(layer['key_shape'])} | {tuple(layer['value_shape'])} | {_bytes(layer['bytes'])} |")
    width = kv["total_bytes"] // elements if elements else 0
    return "\n".join(lines) + "\n\n" + t("inside.kv_total", lang, total=_bytes(kv["total_bytes"]), elements=f"{elements:,}", width=width)


def attribution_figure(result: dict, view: Inside, token: str, lang: str):
    import plotly.graph_objects as go

    first = view.trace.first_position
    names = [f"{p}: {_plain(view.labels[p - first])}" for p in result["positions"]]
    figure = go.Figure([go.Bar(x=names, y=result["integrated_gradients"], name=t("inside.fig.ig", lang), marker_color="#2563eb"),
                        go.Bar(x=names, y=result["gradient_x_input"], name=t("inside.fig.gxi", lang), marker_color="#f97316")])
    figure.update_layout(barmode="group", title=t("inside.fig.attribution_title", lang, token=_plain(token)), height=320,
                         margin=PLOT_MARGIN, legend={"orientation": "h", "y": -0.35}, xaxis_tickangle=-60)
    return figure


def quantization_figure(rows: list[dict], variant: str, lang: str):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = [layer_label(r["layer"], lang) for r in rows]
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    figure.add_trace(go.Bar(x=names, y=[r["relative_error"] for r in rows], name=t("inside.fig.relative_error", lang),
                            marker_color="#dc2626"), secondary_y=False)
    figure.add_trace(go.Scatter(x=names, y=[r["top1_agreement"] for r in rows], name=t("inside.fig.agreement", lang),
                                mode="lines+markers", line={"color": "#16a34a"}), secondary_y=True)
    figure.update_yaxes(title_text=t("inside.fig.relative_error", lang), secondary_y=False)
    figure.update_yaxes(title_text=t("inside.fig.agreement", lang), range=[0, 1.05], secondary_y=True)
    figure.update_layout(title=t("inside.fig.quant_title", lang, variant=escape(variant)), height=320, margin=PLOT_MARGIN,
                         legend={"orientation": "h", "y": -0.25})
    return figure


# --- the tab ----------------------------------------------------------------------------------------------------------------


def build_inside_tab(playground: Playground, last_result: gr.State, tab: gr.Tab) -> dict:
    """Lay out the tab; `last_result` is the run to look inside (the Generate tab's last one, or one from History).

    Returns the event arguments that open `last_result` here, for other tabs to chain after they change it.
    """
    intro = gr.Markdown(translated("inside.intro"))
    with gr.Row():
        show_btn = gr.Button(translated("inside.show"), variant="primary", scale=0, elem_id="inside-show")
        position = gr.Dropdown([], label=translated("inside.position"), scale=3, elem_id="inside-position")
        layer = gr.Slider(0, 1, value=0, step=1, label=translated("inside.layer"), scale=2, elem_id="inside-layer")
        head = gr.Slider(0, 1, value=0, step=1, label=translated("inside.head"), scale=2, elem_id="inside-head")
    status = gr.Markdown(elem_id="inside-status")
    with gr.Column(visible=False) as body:
        gr.Markdown(translated("inside.embedding_title"))
        gr.Markdown(translated("inside.embedding_help"))
        embedding_plot = gr.Plot(elem_id="inside-embedding")
        gr.Markdown(translated("inside.residual_title"))
        gr.Markdown(translated("inside.residual_help"))
        residual_plot = gr.Plot(elem_id="inside-residual")
        gr.Markdown(translated("inside.lens_title"))
        gr.Markdown(translated("inside.lens_help"))
        with gr.Row():
            lens_plot = gr.Plot(elem_id="inside-lens")
            lens_html = gr.HTML(elem_id="inside-lens-table")
        gr.Markdown(translated("inside.grid_help"))
        grid_plot = gr.Plot(elem_id="inside-grid")
        gr.Markdown(translated("inside.funnel_title"))
        gr.Markdown(translated("inside.funnel_help"))
        with gr.Row():
            temperature = gr.Slider(0.05, 3.0, value=1.0, step=0.05, label=translated("inside.temperature"), elem_id="inside-temperature")
            top_k = gr.Slider(0, 200, value=50, step=1, label=translated("inside.top_k"), elem_id="inside-top-k")
            top_p = gr.Slider(0.01, 1.0, value=1.0, step=0.01, label=translated("inside.top_p"), elem_id="inside-top-p")
            reset_btn = gr.Button(translated("inside.reset"), scale=0, size="sm")
        with gr.Row():
            funnel_plot = gr.Plot(elem_id="inside-funnel")
            funnel_html = gr.HTML(elem_id="inside-funnel-table")
        gr.Markdown(translated("inside.block_title"))
        gr.Markdown(translated("inside.block_help"))
        block_plot = gr.Plot(elem_id="inside-block")
        gr.Markdown(translated("inside.mlp_help"))
        mlp_plot = gr.Plot(elem_id="inside-mlp")
        gr.Markdown(translated("inside.kv_title"))
        gr.Markdown(translated("inside.kv_help"))
        kv_md = gr.Markdown(elem_id="inside-kv")
        gr.Markdown(translated("inside.attribution_title"))
        gr.Markdown(translated("inside.attribution_help"))
        attribution_btn = gr.Button(translated("inside.attribution_button"), size="sm", elem_id="inside-attribution-button")
        attribution_md = gr.Markdown(elem_id="inside-attribution-summary")
        attribution_plot = gr.Plot(elem_id="inside-attribution")
        gr.Markdown(translated("inside.quant_title"))
        gr.Markdown(translated("inside.quant_help"))
        quant_btn = gr.Button(translated("inside.quant_button"), size="sm", elem_id="inside-quant-button")
        quant_md = gr.Markdown(elem_id="inside-quant-note")
        quant_plot = gr.Plot(elem_id="inside-quant")
    localize_on_load([intro], lambda lang: t("inside.intro", lang))

    def view_of(result: GenerationResult, lang: str) -> Inside:
        try:
            return playground.inside(result)
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None

    def funnel_views(result, choice, temp, k, p, lang):
        view = view_of(result, lang)
        try:
            report = view.report(_choice_position(choice), 0, 0, temp, k, p)
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        return funnel_figure(report, lang), funnel_table(report, view.codec, lang)

    def render(result, choice, layer_i, head_i, temp, k, p, lang):
        view = view_of(result, lang)
        try:
            report = view.report(_choice_position(choice), layer_i, head_i, temp, k, p)
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        token = report["token"]
        note = t("inside.computed", lang, run=report["run_id"] if report["run_id"] is not None else t("inside.no_run_id", lang),
                 backend=escape(report["computed_by"]), tokens=report["window"]["tokens"], position=report["position"],
                 token=f"`{visible_label(token['text'])}`", prob=f"{token['prob']:.4f}" if token["prob"] is not None else "—",
                 raw=f"{token['raw_prob']:.4f}" if token["raw_prob"] is not None else "—")
        for notice in [*view.notices, *view.position_notices(report["position"])]:
            note += f"\n\n⚠️ {error_text(notice, lang)}"
        on_torch = report["backend"] == "torch"
        quant_note = t("inside.quant_torch", lang) if on_torch else ""
        attribution_note = "" if on_torch else t("inside.attribution_torch", lang, backend=f"{report['backend']} {report['variant']}")
        return (note, gr.update(visible=True), embedding_figure(report, view, lang), residual_figure(report, lang),
                lens_figure(report, view, lang), lens_table(report, lang),
                funnel_figure(report, lang), funnel_table(report, view.codec, lang), block_figure(report, view, lang),
                mlp_figure(report, lang), kv_markdown(report, lang), attribution_note, gr.update(value=None, visible=on_torch),
                gr.update(interactive=on_torch), quant_note, gr.update(value=None, visible=not on_torch),
                gr.update(interactive=not on_torch))

    def open_run(result: GenerationResult | None, request: gr.Request):
        lang = lang_of(request)
        if result is None:
            return (t("inside.generate_first", lang), gr.update(visible=False)) + (gr.skip(),) * 7
        view = view_of(result, lang)
        choices, default = position_choices(view, lang)
        config = view.reference.config
        s = result.settings
        return (gr.skip(), gr.skip(), gr.update(choices=choices, value=default), gr.update(maximum=config.n_layer - 1, value=0),
                gr.update(maximum=config.n_head - 1, value=0), gr.update(value=s.temperature), gr.update(value=s.top_k),
                gr.update(value=s.top_p), None)

    def show(result, choice, layer_i, head_i, temp, k, p, request: gr.Request):
        lang = lang_of(request)
        if result is None or choice in (None, ""):
            return (gr.skip(),) * 17
        return render(result, choice, layer_i, head_i, temp, k, p, lang)

    def refresh_funnel(result, choice, temp, k, p, request: gr.Request):
        if result is None or choice in (None, ""):
            return gr.skip(), gr.skip()
        return funnel_views(result, choice, temp, k, p, lang_of(request))

    def reset(result):
        if result is None:
            return gr.skip(), gr.skip(), gr.skip()
        s = result.settings
        return s.temperature, s.top_k, s.top_p

    def attribution(result, choice, request: gr.Request):
        lang = lang_of(request)
        if result is None or choice in (None, ""):
            return gr.skip(), gr.skip()
        view = view_of(result, lang)
        position_i = _choice_position(choice)
        try:
            found = view.attribution(position_i)
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        change = found["output"] - found["baseline_output"]
        summary = t("inside.attribution_summary", lang, total=sum(found["integrated_gradients"]), change=change, delta=found["delta"])
        token = view.labels[position_i - view.trace.first_position]
        return summary, gr.update(value=attribution_figure(found, view, token, lang), visible=True)

    def quantization(result, request: gr.Request):
        lang = lang_of(request)
        if result is None:
            return gr.skip(), gr.skip()
        if result.info.backend == "torch":
            return t("inside.quant_torch", lang), None
        view = view_of(result, lang)
        try:
            rows = view.quantization(playground.backend("torch", None, result.info.model))
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        return "", gr.update(value=quantization_figure(rows, f"{result.info.backend} {result.info.variant}", lang), visible=True)

    def grid(result, choice, request: gr.Request):
        """The whole run's logit lens: drawn after the position's views, which do not wait for it."""
        if result is None or choice in (None, ""):
            return gr.skip()
        lang = lang_of(request)
        return grid_figure(view_of(result, lang), _choice_position(choice), lang)

    views = [status, body, embedding_plot, residual_plot, lens_plot, lens_html, funnel_plot, funnel_html, block_plot,
             mlp_plot, kv_md, attribution_md, attribution_plot, attribution_btn, quant_md, quant_plot, quant_btn]
    setup_outputs = [status, body, position, layer, head, temperature, top_k, top_p, attribution_plot]
    show_inputs = [last_result, position, layer, head, temperature, top_k, top_p]
    on_open = dict(fn=open_run, inputs=[last_result], outputs=setup_outputs, api_visibility="private")
    then_show = dict(fn=show, inputs=show_inputs, outputs=views, api_visibility="private")
    then_grid = dict(fn=grid, inputs=[last_result, position], outputs=[grid_plot], api_visibility="private")
    tab.select(**on_open).then(**then_show).then(**then_grid)
    show_btn.click(**on_open).then(**then_show).then(**then_grid)
    position.input(**then_show).then(**then_grid)
    for control in (layer, head):
        control.input(**then_show)
    for control in (temperature, top_k, top_p):
        control.change(refresh_funnel, inputs=[last_result, position, temperature, top_k, top_p], outputs=[funnel_plot, funnel_html],
                        api_visibility="private")
    reset_btn.click(reset, inputs=[last_result], outputs=[temperature, top_k, top_p], api_visibility="private").then(
        refresh_funnel, inputs=[last_result, position, temperature, top_k, top_p], outputs=[funnel_plot, funnel_html],
        api_visibility="private")
    attribution_btn.click(attribution, inputs=[last_result, position], outputs=[attribution_md, attribution_plot], api_visibility="private")
    quant_btn.click(quantization, inputs=[last_result], outputs=[quant_md, quant_plot], api_visibility="private")
    return {"open": on_open, "show": then_show, "grid": then_grid}
