"""The Compare tab: one prompt, settings and seed on PyTorch and on an ONNX variant, side by side."""

from __future__ import annotations

from html import escape

import gradio as gr

from ..compare import Comparison, compare
from ..errors import PlaygroundError
from ..export import VARIANTS
from ..generation import GenerationResult
from ..service import Playground
from .generate_tab import SETTING_NAMES, settings_from_ui
from .i18n import lang_of, localize_on_load, t, translated, ui_error
from .render import output_token_name, stats_markdown, token_view_html


def summary_markdown(a: GenerationResult, b: GenerationResult, c: Comparison, lang: str = "en") -> str:
    if c.first_divergence is None:
        head = t("compare.identical", lang, tokens=len(a.tokens))
    else:
        i = c.first_divergence
        got_a = escape(output_token_name(a, i)) if i < len(a.tokens) else t("compare.end", lang)
        got_b = escape(output_token_name(b, i)) if i < len(b.tokens) else t("compare.end", lang)
        head = t("compare.divergence", lang, index=i, token_a=got_a, token_b=got_b)
    parts = [head, t("compare.max_diff", lang, diff=c.max_abs_prob_diff)]
    if c.speedup_b_over_a:
        parts.append(t("compare.speed", lang, speed_a=c.tokens_per_s_a, speed_b=c.tokens_per_s_b, speedup=c.speedup_b_over_a))
    return "\n\n".join(parts)


def probability_figure(c: Comparison | None, label_b: str, lang: str = "en"):
    import plotly.graph_objects as go

    figure = go.Figure()
    if c is not None:
        figure.add_trace(go.Scatter(x=c.positions, y=c.probs_a, name="PyTorch", mode="lines+markers", marker={"size": 4}))
        figure.add_trace(go.Scatter(x=c.positions, y=c.probs_b, name=escape(label_b), mode="lines+markers", marker={"size": 4}))
        if c.first_divergence is not None and c.positions:
            figure.add_vline(x=c.positions[-1], line_dash="dash", line_color="#dc2626", annotation_text=t("compare.diverged", lang))
    figure.update_layout(height=260, margin={"l": 50, "r": 20, "t": 40, "b": 40}, xaxis_title=t("compare.plot_x", lang),
                         yaxis_title=t("compare.plot_y", lang), title=t("compare.plot_title", lang),
                         legend={"orientation": "h"})
    return figure


def build_compare_tab(playground: Playground, generate_inputs: dict) -> None:
    gr.Markdown(translated("compare.intro"))
    with gr.Row():
        variant = gr.Dropdown(list(VARIANTS), value="int8", label=translated("compare.variant"), scale=1, elem_id="compare-variant")
        run_btn = gr.Button(translated("compare.run"), variant="primary", scale=0, elem_id="compare-run")
    summary = gr.Markdown(elem_id="compare-summary")
    with gr.Row(equal_height=False):
        with gr.Column():
            stats_a = gr.Markdown(elem_id="compare-stats-a")
            view_a = gr.HTML(token_view_html(None), elem_id="compare-view-a")
        with gr.Column():
            stats_b = gr.Markdown(elem_id="compare-stats-b")
            view_b = gr.HTML(token_view_html(None), elem_id="compare-view-b")
    plot = gr.Plot(probability_figure(None, "ONNX"), elem_id="compare-plot")
    localize_on_load([plot], lambda lang: probability_figure(None, "ONNX", lang))

    def run_both(request: gr.Request, prompt, model, variant_name, *values):  # Gradio fills `request` only before *values
        lang = lang_of(request)
        settings = settings_from_ui(*values, lang=lang).with_seed()  # one seed for both sides
        results = []
        try:
            for backend, var in (("torch", None), ("onnx", variant_name)):
                run = playground.start(prompt, settings, backend=backend, variant=var, model=model)
                for _ in playground.stream(run):
                    pass
                results.append(run.result)
                if len(results) == 1:
                    yield (t("compare.running", lang, variant=variant_name), stats_markdown(results[0]), token_view_html(results[0]),
                           gr.skip(), gr.skip(), gr.skip())
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        a, b = results
        c = compare(a, b)
        mark = a.tokens[c.first_divergence].position if c.first_divergence is not None and c.first_divergence < len(a.tokens) else None
        yield (summary_markdown(a, b, c, lang), stats_markdown(a), token_view_html(a, mark_position=mark), stats_markdown(b),
               token_view_html(b, mark_position=mark), probability_figure(c, f"ONNX {variant_name}", lang))

    run_btn.click(run_both, inputs=[generate_inputs["prompt"], generate_inputs["model"], variant, *(generate_inputs[n] for n in SETTING_NAMES)],
                  outputs=[summary, stats_a, view_a, stats_b, view_b, plot], api_visibility="private", concurrency_id="generate")
