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
from .render import stats_markdown, token_view_html


def summary_markdown(a: GenerationResult, b: GenerationResult, c: Comparison) -> str:
    if c.first_divergence is None:
        head = f"**Identical output** over {len(a.tokens)} tokens."
    else:
        i = c.first_divergence
        got_a = escape(repr(a.tokens[i].text)[1:-1]) if i < len(a.tokens) else "(end)"
        got_b = escape(repr(b.tokens[i].text)[1:-1]) if i < len(b.tokens) else "(end)"
        head = f"**First divergence at generated token {i}**: PyTorch chose `{got_a}`, ONNX chose `{got_b}` (outlined in red)."
    parts = [head, f"Largest difference in the chosen token's probability before that point: **{c.max_abs_prob_diff:.4f}**."]
    if c.speedup_b_over_a:
        parts.append(f"Decode speed: PyTorch **{c.tokens_per_s_a:.1f}** vs ONNX **{c.tokens_per_s_b:.1f}** tokens/s "
                     f"(**{c.speedup_b_over_a:.2f}×**, one live run each; the Benchmark is the controlled measurement).")
    return "\n\n".join(parts)


def probability_figure(c: Comparison | None, label_b: str):
    import plotly.graph_objects as go

    figure = go.Figure()
    if c is not None:
        figure.add_trace(go.Scatter(x=c.positions, y=c.probs_a, name="PyTorch", mode="lines+markers", marker={"size": 4}))
        figure.add_trace(go.Scatter(x=c.positions, y=c.probs_b, name=escape(label_b), mode="lines+markers", marker={"size": 4}))
        if c.first_divergence is not None and c.positions:
            figure.add_vline(x=c.positions[-1], line_dash="dash", line_color="#dc2626", annotation_text="diverged")
    figure.update_layout(height=260, margin={"l": 50, "r": 20, "t": 40, "b": 40}, xaxis_title="position",
                         yaxis_title="p(PyTorch's token)", title="Probability each side gave PyTorch's chosen token",
                         legend={"orientation": "h"})
    return figure


def build_compare_tab(playground: Playground, generate_inputs: dict) -> None:
    gr.Markdown("Runs the prompt, model and settings of the Generate tab (seed included; a random seed is drawn once and used for both) "
                "on PyTorch and on an ONNX variant. Both runs are saved to the history.")
    with gr.Row():
        variant = gr.Dropdown(list(VARIANTS), value="int8", label="ONNX variant to compare", scale=1, elem_id="compare-variant")
        run_btn = gr.Button("Compare PyTorch vs ONNX", variant="primary", scale=0, elem_id="compare-run")
    summary = gr.Markdown(elem_id="compare-summary")
    with gr.Row(equal_height=False):
        with gr.Column():
            stats_a = gr.Markdown(elem_id="compare-stats-a")
            view_a = gr.HTML(token_view_html(None), elem_id="compare-view-a")
        with gr.Column():
            stats_b = gr.Markdown(elem_id="compare-stats-b")
            view_b = gr.HTML(token_view_html(None), elem_id="compare-view-b")
    plot = gr.Plot(probability_figure(None, "ONNX"), elem_id="compare-plot")

    def run_both(prompt, model, variant_name, *values):
        settings = settings_from_ui(*values).with_seed()  # one seed for both sides
        results = []
        try:
            for backend, var in (("torch", None), ("onnx", variant_name)):
                run = playground.start(prompt, settings, backend=backend, variant=var, model=model)
                for _ in playground.stream(run):
                    pass
                results.append(run.result)
                if len(results) == 1:
                    yield (f"Running on ONNX {variant_name}…", stats_markdown(results[0]), token_view_html(results[0]),
                           gr.skip(), gr.skip(), gr.skip())
        except PlaygroundError as exc:
            raise gr.Error(str(exc)) from None
        a, b = results
        c = compare(a, b)
        mark = a.tokens[c.first_divergence].position if c.first_divergence is not None and c.first_divergence < len(a.tokens) else None
        yield (summary_markdown(a, b, c), stats_markdown(a), token_view_html(a, mark_position=mark), stats_markdown(b),
               token_view_html(b, mark_position=mark), probability_figure(c, f"ONNX {variant_name}"))

    run_btn.click(run_both, inputs=[generate_inputs["prompt"], generate_inputs["model"], variant, *(generate_inputs[n] for n in SETTING_NAMES)],
                  outputs=[summary, stats_a, view_a, stats_b, view_b, plot], api_visibility="private", concurrency_id="generate")
