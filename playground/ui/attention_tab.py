"""The Attention tab: the last run's attention as a heatmap per layer and head, small multiples, downloads."""

from __future__ import annotations

import tempfile
from html import escape
from pathlib import Path

import gradio as gr

from ..analysis.attention import MAX_ATTENTION_TOKENS, RunAttention, compute_attention, heatmap_figure, row_figure, small_multiples, static_heatmap
from ..errors import PlaygroundError
from ..figures import cjk_font_notice
from ..records import GenerationResult
from ..service import Playground
from ..text import visible_label
from .i18n import error, error_text, lang_of, localize_on_load, t, translated, ui_error, warning

MEAN = "mean over heads"
NO_QUERY = "(none)"


def _head(choice: str) -> int | None:
    return None if choice in (None, MEAN) else int(choice.split()[-1])


def _query(choice: str | None) -> int | None:
    return None if choice in (None, NO_QUERY) else int(choice.split(":", 1)[0])


def heads_titles(run: RunAttention, layer: int, lang: str) -> dict:
    """The all-heads image's words in `lang`; English when no installed font can draw Chinese (boxes would be worse)."""
    title = t("attention.heads_title", lang, layer=layer, heads=run.n_heads)
    if cjk_font_notice([title]):  # also registers the CJK font when there is one
        lang, title = "en", t("attention.heads_title", "en", layer=layer, heads=run.n_heads)
    return {"title": title, "head_title": t("attention.head_n", lang, head="{head}")}


def localized_heatmap(run: RunAttention, layer: int, head: int | None, query: int | None, lang: str):
    """The heatmap of one layer's head (None: the mean over heads), its words in `lang` (the domain draws them in English)."""
    heat = heatmap_figure(run, layer, head, query)
    what = t("attention.mean_heads", lang) if head is None else t("attention.head_n", lang, head=head)
    heat.update_layout(title=t("attention.fig_title", lang, layer=layer, what=what, backend=escape(run.computed_by)))
    heat.update_xaxes(title=t("attention.key_axis", lang))
    heat.update_yaxes(title=t("attention.query_axis", lang))
    heat.update_traces(colorbar={"title": t("attention.weight", lang)})
    return heat


def heads_picture(run: RunAttention, layer: int, lang: str) -> str:
    """Every head of one layer side by side, as a PNG file's path (its titles in `lang` where a font can draw them)."""
    return str(small_multiples(run, layer, Path(tempfile.mkdtemp()) / "heads.png", **heads_titles(run, layer, lang)))


def run_key(result: GenerationResult) -> tuple:
    """What makes two runs' attention the same: the backend that computes it and the token sequence."""
    return (result.info.backend, result.info.variant, tuple(t.token_id for t in result.prompt_tokens + result.tokens))


def build_attention_tab(playground: Playground, last_result: gr.State, tab: gr.Tab) -> dict:
    """Lay out the tab; `last_result` is the run to show (the Generate tab's last one, or one from History).

    Returns the event arguments that compute the attention of `last_result` if not done yet, for
    other tabs to chain after they change it.
    """
    attention = gr.State(None)  # RunAttention of the run it was computed for
    computed_for = gr.State(None)  # run_key() of that run, to compute once per run
    intro = gr.Markdown(t("attention.intro", "en", max_tokens=MAX_ATTENTION_TOKENS))
    with gr.Row():
        compute_btn = gr.Button(translated("attention.compute"), variant="primary", scale=0, elem_id="attention-compute")
        layer = gr.Slider(0, 1, value=0, step=1, label=translated("attention.layer"), scale=2, elem_id="attention-layer")
        head = gr.Dropdown([MEAN], value=MEAN, label=translated("attention.head"), scale=1, elem_id="attention-head")
        query = gr.Dropdown([NO_QUERY], value=NO_QUERY, label=translated("attention.query"), scale=2, elem_id="attention-query")
    status = gr.Markdown(elem_id="attention-status")
    heatmap = gr.Plot(elem_id="attention-heatmap")
    row_plot = gr.Plot(row_figure(None, 0, None, None), elem_id="attention-row")
    heads_image = gr.Image(label=translated("attention.all_heads"), type="filepath", interactive=False, elem_id="attention-heads")
    with gr.Row():
        png_btn = gr.Button(translated("attention.png"), size="sm")
        svg_btn = gr.Button(translated("attention.svg"), size="sm")
        npz_btn = gr.Button(translated("attention.npz"), size="sm")
    download = gr.File(label=translated("attention.download"), interactive=False, elem_id="attention-download")
    localize_on_load([intro, head, query, row_plot], lambda lang: (
        t("attention.intro", lang, max_tokens=MAX_ATTENTION_TOKENS),
        gr.update(choices=[(t("attention.mean_heads", lang), MEAN)]),
        gr.update(choices=[(t("attention.no_query", lang), NO_QUERY)]),
        row_figure(None, 0, None, None).update_layout(title=t("attention.row_hint", lang))))

    def views(run: RunAttention, layer_i: int, head_choice: str, query_choice: str, lang: str = "en"):
        q, head_i = _query(query_choice), _head(head_choice)
        heads_path = heads_picture(run, int(layer_i), lang)
        heat, row = localized_heatmap(run, int(layer_i), head_i, q, lang), row_figure(run, int(layer_i), head_i, q)
        if q is None:
            row.update_layout(title=t("attention.row_hint", lang))
        else:
            row.update_layout(title=t("attention.row_title", lang, query=q, label=escape(visible_label(run.labels[q]), quote=False)),
                              xaxis_title=t("attention.key_position", lang), yaxis_title=t("attention.weight", lang))
        return heat, row, heads_path

    def compute(result: GenerationResult | None, current: RunAttention | None, current_for, force: bool, lang: str = "en"):
        if result is None:
            return (gr.skip(),) * 2 + (t("attention.generate_first", lang),) + (gr.skip(),) * 7
        if not force and current is not None and current_for == run_key(result):
            return (gr.skip(),) * 10
        try:
            backend = playground.run_backend(result)
            ids = [t.token_id for t in result.prompt_tokens + result.tokens]
            run = compute_attention(backend, ids, playground.source_for(result.info.model).codec)
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        note = t("attention.computed", lang, backend=run.computed_by, tokens=len(run.labels), layers=run.n_layers, heads=run.n_heads)
        if run.notice:
            note += f"\n\n⚠️ {error_text(run.notice, lang)}"
        queries = [(t("attention.no_query", lang), NO_QUERY)] + [f"{i}: {visible_label(label)}" for i, label in enumerate(run.labels)]
        heat, row, heads_path = views(run, 0, MEAN, NO_QUERY, lang)
        return (run, run_key(result), note, gr.update(maximum=run.n_layers - 1, value=0),
                gr.update(choices=[(t("attention.mean_heads", lang), MEAN)]
                          + [(t("attention.head_n", lang, head=h), f"head {h}") for h in range(run.n_heads)], value=MEAN),
                gr.update(choices=queries, value=NO_QUERY), heat, row, heads_path, None)

    def update(run: RunAttention | None, layer_i, head_choice, query_choice, request: gr.Request):
        if run is None:
            return gr.skip(), gr.skip(), gr.skip()
        return views(run, layer_i, head_choice, query_choice, lang_of(request))

    def export(run: RunAttention | None, layer_i, head_choice, fmt: str, lang: str = "en"):
        if run is None:
            raise error("attention.compute_first", lang)
        folder = Path(tempfile.mkdtemp(prefix="gpt2-playground-attention-"))
        if fmt != "npz" and cjk_font_notice(run.labels):
            warning("attention.no_cjk_font", lang)
        if fmt == "npz":
            return str(run.save_npz(folder / "attention.npz"))
        what = "mean" if _head(head_choice) is None else f"head{_head(head_choice)}"
        return str(static_heatmap(run, int(layer_i), _head(head_choice), folder / f"attention-layer{int(layer_i)}-{what}.{fmt}"))

    compute_outputs = [attention, computed_for, status, layer, head, query, heatmap, row_plot, heads_image, download]

    def compute_now(r, a, f, request: gr.Request):
        return compute(r, a, f, True, lang_of(request))

    def compute_once(r, a, f, request: gr.Request):
        return compute(r, a, f, False, lang_of(request))

    compute_btn.click(compute_now, inputs=[last_result, attention, computed_for],
                      outputs=compute_outputs, api_visibility="private")
    on_open = dict(fn=compute_once, inputs=[last_result, attention, computed_for],
                   outputs=compute_outputs, api_visibility="private")
    tab.select(**on_open)
    for control in (layer, head, query):
        control.change(update, inputs=[attention, layer, head, query], outputs=[heatmap, row_plot, heads_image], api_visibility="private")
    for button, fmt in ((png_btn, "png"), (svg_btn, "svg"), (npz_btn, "npz")):
        def export_as(run, li, hc, request: gr.Request, fmt=fmt):
            return export(run, li, hc, fmt, lang_of(request))

        button.click(export_as, inputs=[attention, layer, head], outputs=[download], api_visibility="private")
    return on_open
