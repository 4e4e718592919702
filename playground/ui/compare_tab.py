"""The Compare tab: one prompt, settings and seed on two sides, each a (model, backend, variant), side by side."""

from __future__ import annotations

import time
from html import escape

import gradio as gr

from ..analysis.compare import Comparison, compare, same_vocabulary
from ..errors import PlaygroundError
from ..onnx.export import VARIANTS
from ..generation import Generation
from ..records import GenerationResult
from ..service import Playground
from ..config import SETTING_NAMES
from .generate_tab import RENDER_EVERY_S, backend_choices, settings_from_ui
from .i18n import lang_of, localize_on_load, t, translated, ui_error
from .render import output_token_name, stats_markdown, token_view_html



def sides_markdown(a: GenerationResult, b: GenerationResult, lang: str = "en") -> str:
    """Which side is which, and the seed both used."""
    return (f"- **A**: {escape(a.info.label())}\n- **B**: {escape(b.info.label())}\n\n"
            + t("compare.seed", lang, seed=a.settings.seed))


def summary_markdown(a: GenerationResult, b: GenerationResult, c: Comparison | None, lang: str = "en",
                     vocab_sizes: tuple[int, int] | None = None) -> str:
    """`c` is None when the sides have different tokenizers (`vocab_sizes`: theirs): nothing to match token by token."""
    parts = [sides_markdown(a, b, lang)]
    if c is None:
        vocab_a, vocab_b = vocab_sizes or ("?", "?")
        parts.append(t("compare.different_tokenizers", lang, vocab_a=vocab_a, vocab_b=vocab_b))
        return "\n\n".join(parts)
    if c.first_divergence is None:
        parts.append(t("compare.identical", lang, tokens=len(a.tokens)))
    else:
        i = c.first_divergence
        got_a = escape(output_token_name(a, i)) if i < len(a.tokens) else t("compare.end", lang)
        got_b = escape(output_token_name(b, i)) if i < len(b.tokens) else t("compare.end", lang)
        parts.append(t("compare.divergence", lang, index=i, token_a=got_a, token_b=got_b))
    parts.append(t("compare.max_diff", lang, diff=c.max_abs_prob_diff))
    if c.speedup_b_over_a:
        parts.append(t("compare.speed", lang, speed_a=c.tokens_per_s_a, speed_b=c.tokens_per_s_b, speedup=c.speedup_b_over_a))
    return "\n\n".join(parts)


def probability_figure(c: Comparison | None, label_a: str = "", label_b: str = "", lang: str = "en"):
    import plotly.graph_objects as go

    figure = go.Figure()
    if c is not None:
        # B dashed over A: where the two agree (often everywhere) both lines stay visible.
        figure.add_trace(go.Scatter(x=c.positions, y=c.probs_a, name=f"A · {escape(label_a)}", mode="lines+markers",
                                    line={"width": 3}, marker={"size": 6}))
        figure.add_trace(go.Scatter(x=c.positions, y=c.probs_b, name=f"B · {escape(label_b)}", mode="lines+markers",
                                    line={"dash": "dash", "width": 2}, marker={"size": 5, "symbol": "x"}))
        if c.first_divergence is not None and c.positions:
            figure.add_vline(x=c.positions[-1], line_dash="dash", line_color="#dc2626", annotation_text=t("compare.diverged", lang))
    figure.update_layout(height=280, margin={"l": 50, "r": 20, "t": 40, "b": 40}, xaxis_title=t("compare.plot_x", lang),
                         yaxis_title=t("compare.plot_y", lang), title=t("compare.plot_title", lang),
                         legend={"orientation": "h", "y": -0.25})
    return figure


def side_stats(side: str, result: GenerationResult | None, running: bool = False, lang: str = "en") -> str:
    return f"**{side}** · {stats_markdown(result, running=running, lang=lang)}" if result is not None else ""


def build_compare_tab(playground: Playground, generate_inputs: dict, tab: gr.Tab) -> dict:
    """Lay out the tab inside `tab`, which refreshes the model lists when opened (a fine-tuned model appears)."""
    gr.Markdown(translated("compare.intro"))
    choices = playground.model_choices()
    sides = {}
    with gr.Row(equal_height=True):
        # With a serving engine (--remote-url), side B is the engine beside local PyTorch.
        b_default = "remote" if "remote" in playground.backend_choices() else "onnx"
        for side, backend_default, variant_default in (("a", "torch", playground.default_variant), ("b", b_default, "int8")):
            with gr.Column(variant="panel", min_width=280):
                gr.Markdown(translated("compare.side_a") if side == "a" else translated("compare.side_b"))
                model = gr.Dropdown(choices, value=playground.source.name, label=translated("generate.model"), allow_custom_value=True,
                                    info=translated("generate.model_info"), elem_id=f"compare-model-{side}")
                with gr.Row():
                    backend = gr.Radio(backend_choices(playground), value=backend_default, label=translated("generate.backend"),
                                       elem_id=f"compare-backend-{side}")
                    variant = gr.Dropdown(list(VARIANTS), value=variant_default, label=translated("generate.variant"),
                                          interactive=backend_default == "onnx", elem_id=f"compare-variant-{side}")
            sides[side] = (model, backend, variant)
    with gr.Row():
        run_btn = gr.Button(translated("compare.run"), variant="primary", scale=0, min_width=220, elem_id="compare-run")
        swap_btn = gr.Button(translated("compare.swap"), scale=0, min_width=160, elem_id="compare-swap")
    summary = gr.Markdown(elem_id="compare-summary")
    with gr.Row(equal_height=False):
        with gr.Column():
            stats_a = gr.Markdown(elem_id="compare-stats-a")
            view_a = gr.HTML(token_view_html(None), elem_id="compare-view-a")
        with gr.Column():
            stats_b = gr.Markdown(elem_id="compare-stats-b")
            view_b = gr.HTML(token_view_html(None), elem_id="compare-view-b")
    plot = gr.Plot(probability_figure(None), elem_id="compare-plot")
    localize_on_load([view_a, view_b, plot], lambda lang: (token_view_html(None, lang=lang), token_view_html(None, lang=lang),
                                                           probability_figure(None, lang=lang)))

    def run_both(request: gr.Request, prompt, model_a, backend_a, variant_a, model_b, backend_b, variant_b, *values):
        # Gradio fills `request` only before *values.
        lang = lang_of(request)
        settings = settings_from_ui(dict(zip(SETTING_NAMES, values)), lang).with_seed()  # an empty seed is drawn here, once, for both sides
        runs: list[Generation] = []
        try:
            for side, model, backend, variant in (("A", model_a, backend_a, variant_a), ("B", model_b, backend_b, variant_b)):
                run = playground.start(prompt, settings, backend=backend, variant=variant, model=model, owner=request.username or "")
                runs.append(run)
                running = t("compare.running", lang, side=side, label=escape(run.result.info.label()))
                yield running_views(side, run.result, running, lang, first=True)
                last_render = time.perf_counter()
                for _ in playground.stream(run):
                    now = time.perf_counter()
                    if now - last_render >= RENDER_EVERY_S:
                        last_render = now
                        yield running_views(side, run.result, running, lang)
                yield running_views(side, run.result, running, lang, done=True)
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        (run_a, run_b), (a, b) = runs, (runs[0].result, runs[1].result)
        if not same_vocabulary(run_a.source.codec, run_b.source.codec):
            yield (summary_markdown(a, b, None, lang, (len(run_a.source.codec), len(run_b.source.codec))),
                   side_stats("A", a, lang=lang), token_view_html(a, lang=lang), side_stats("B", b, lang=lang),
                   token_view_html(b, lang=lang), gr.update(value=probability_figure(None, lang=lang), visible=False))
            return
        c = compare(a, b)
        mark = a.tokens[c.first_divergence].position if c.first_divergence is not None and c.first_divergence < len(a.tokens) else None
        yield (summary_markdown(a, b, c, lang), side_stats("A", a, lang=lang), token_view_html(a, mark_position=mark, lang=lang),
               side_stats("B", b, lang=lang), token_view_html(b, mark_position=mark, lang=lang),
               gr.update(value=probability_figure(c, a.info.label(), b.info.label(), lang), visible=True))

    def running_views(side: str, result: GenerationResult, running: str, lang: str, first: bool = False, done: bool = False):
        """Outputs while side `side` runs: its live views; the first of side A clears the last comparison."""
        views = (side_stats(side, result, running=not done, lang=lang), token_view_html(result, lang=lang))
        if side == "A":
            cleared = ("", token_view_html(None, lang=lang), probability_figure(None, lang=lang)) if first else (gr.skip(),) * 3
            return (running, *views, *cleared)
        return (running, gr.skip(), gr.skip(), *views, gr.skip())

    def swap(model_a, backend_a, variant_a, model_b, backend_b, variant_b):
        return (model_b, backend_b, gr.update(value=variant_b, interactive=backend_b == "onnx"),
                model_a, backend_a, gr.update(value=variant_a, interactive=backend_a == "onnx"))

    def refresh_models():
        """New model folders appear while the app runs (a fine-tuned model): offer them."""
        choices = playground.model_choices()
        return gr.update(choices=choices), gr.update(choices=choices)

    side_inputs = [*sides["a"], *sides["b"]]
    run_btn.click(run_both, inputs=[generate_inputs["prompt"], *side_inputs, *(generate_inputs[n] for n in SETTING_NAMES)],
                  outputs=[summary, stats_a, view_a, stats_b, view_b, plot], api_visibility="private", concurrency_id="generate",
                  concurrency_limit=playground.runs_at_once)
    swap_btn.click(swap, inputs=side_inputs, outputs=side_inputs, queue=False, api_visibility="private")
    for _, backend, variant in sides.values():
        backend.change(lambda b: gr.update(interactive=b == "onnx"), inputs=backend, outputs=variant, queue=False,
                       api_visibility="private")
    tab.select(refresh_models, outputs=[sides["a"][0], sides["b"][0]], queue=False, api_visibility="private")
    return sides  # {"a": (model, backend, variant), "b": ...}: the Fine-tune tab fills them ("Compare with the base model")
