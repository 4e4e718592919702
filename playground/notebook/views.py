"""The notebook's inline views of a run: its tokens (hover cards, GLTR colours), attention, and inside one prediction.

Each is a `page.View`: `_repr_html_` for Jupyter, `save_html(path)` for a standalone file. The token view and the
Inside tables are the app's own HTML (playground/ui/render.py, playground/ui/inside_html.py); the attention heatmaps
are drawn by the bundled assets/notebook.js from the app's `RunAttention`.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from html import escape

import numpy as np

from ..analysis.attention import RunAttention
from ..analysis.inside import Inside
from ..errors import PlaygroundError
from ..locales import STRINGS, error_text
from ..locales import text as t
from ..records import GenerationResult
from ..text import visible_label
from ..ui.inside_html import funnel_table, layer_label, lens_table, stage_label
from ..ui.render import legend_html, pct, samples_html, token_view_html
from .page import View, json_for_script

GLTR_MODES = ("prob", "rank")


def run_meta(result: GenerationResult, lang: str) -> str:
    """One line under a run: what ran it, its token counts, seed and how it ended (the app's words)."""
    finish_key = f"stats.finish.{result.finish_reason}"
    parts = [result.info.label(),
             t("stats.counts", lang, prompt=len(result.prompt_tokens), new=len(result.tokens)).replace("**", ""),
             t("stats.seed", lang, seed=result.settings.seed),
             t(finish_key, lang) if finish_key in STRINGS["en"] else result.finish_reason]
    if result.run_id is not None:
        parts.append(t("stats.saved", lang, id=result.run_id))
    return " · ".join(parts)


class TokensView(View):
    """A run's samples as the Generate tab shows them: each character coloured (probability, or GLTR's rank buckets
    with `mode="rank"`), its card of probability, rank, entropy and alternatives on hover or focus."""

    kind = "tokens"

    def __init__(self, results: list[GenerationResult], lang: str, mode: str = "prob"):
        if mode not in GLTR_MODES:
            raise PlaygroundError(key="notebook.mode", mode=mode, available=", ".join(GLTR_MODES))
        self.results, self.lang, self.mode = results, lang, mode

    def body_html(self) -> str:
        first = self.results[0]
        notices = [*first.notices, *([first.info.notice] if first.info.notice else [])]
        parts = [legend_html(self.mode, self.lang),
                 *(f'<div class="notice">⚠️ {escape(error_text(n, self.lang))}</div>' for n in notices)]
        if len(self.results) == 1:
            parts += [f'<div class="meta">{escape(run_meta(first, self.lang))}</div>',
                      token_view_html(first, self.mode, lang=self.lang)]
        else:  # the prompt once, then every sample's output side by side, as the app shows N samples
            parts += [f'<div class="meta">{escape(first.info.label())}</div>',
                      token_view_html(_prompt_only(first), self.mode, lang=self.lang),
                      samples_html(self._as_saved(), self.mode, chosen=-1, lang=self.lang)]
        return "".join(parts)


    def _as_saved(self) -> list[GenerationResult]:
        """The samples for `samples_html`, whose footer says the group was saved: without its group id when it was not
        (a model opened without a history)."""
        if all(r.run_id is not None for r in self.results):
            return self.results
        return [replace(r, group_id=None) for r in self.results]


def _prompt_only(result: GenerationResult) -> GenerationResult:
    return replace(result, tokens=[])


class AttentionView(View):
    """Every layer's and head's attention over a run as small heatmaps (a layer a row, the mean over heads first);
    a click enlarges one, with the tokens on its axes and each weight on hover."""

    kind = "attention"
    script = "attention"

    def __init__(self, attention: RunAttention, lang: str, layer: int = 0, head: int | None = None):
        self.attention, self.lang, self.layer, self.head = attention, lang, layer, head

    @property
    def weights(self) -> np.ndarray:
        """(layers, heads, T, T): row q is what query token q attended to."""
        return self.attention.weights

    def body_html(self) -> str:
        run, lang = self.attention, self.lang
        layers, heads = run.n_layers, run.n_heads
        # One byte per weight (1/255 steps): 12 layers x 12 heads x 96 x 96 tokens is 1.3 MB, as base64 1.8 MB.
        quantised = np.clip(np.rint(run.weights * 255), 0, 255).astype(np.uint8)  # (L, H, T, T)
        data = {"layers": layers, "heads": heads, "labels": [visible_label(x) for x in run.labels],
                "first": run.first_position, "computed_by": run.computed_by, "layer": self.layer,
                "head": -1 if self.head is None else self.head,
                "weights": base64.b64encode(quantised.tobytes()).decode("ascii"),
                "text": {"layer": t("notebook.attention_layer", lang, layer="{layer}"), "mean": t("attention.mean_heads", lang),
                         "head": t("attention.head_n", lang, head="{head}"), "query": t("notebook.query", lang),
                         "key": t("notebook.key", lang), "weight": t("attention.weight", lang)}}
        names = [t("attention.mean_heads", lang)] + [t("attention.head_n", lang, head=h) for h in range(heads)]
        grid = ['<div class="colname"></div>'] + [f'<div class="colname">{escape(n)}</div>' for n in names]
        for layer in range(layers):
            grid.append(f'<div class="rowname">{escape(t("notebook.attention_layer", lang, layer=layer))}</div>')
            grid += [f'<canvas class="thumb" data-layer="{layer}" data-head="{h}" title="{escape(names[h + 1])}"></canvas>'
                     for h in range(-1, heads)]
        notice = f'<div class="notice">⚠️ {escape(error_text(run.notice, lang))}</div>' if run.notice else ""
        computed = t("attention.computed", lang, backend=run.computed_by, tokens=len(run.labels), layers=layers, heads=heads)
        return (f'<div class="meta">{escape(computed.replace("**", ""))}</div>{notice}'
                f'<div class="hint">{escape(t("notebook.attention_hint", lang))}</div>'
                f'<div class="noscript">{escape(t("notebook.needs_script", lang))}</div>'
                f'<div class="attention"><div class="thumbs" style="grid-template-columns: max-content repeat({heads + 1}, 64px)">'
                f'{"".join(grid)}</div><div><div class="big-title"></div><canvas class="big"></canvas>'
                f'<div class="readout"></div></div></div>'
                f'<script type="application/json">{json_for_script(data)}</script>')


def _blue(x: float) -> str:
    """A cell colour for a probability: white at 0 to dark blue at 1 (with white text past the middle)."""
    x = min(1.0, max(0.0, x))
    r, g, b = (round(247 + (8 - 247) * x), round(251 + (48 - 251) * x), round(255 + (107 - 255) * x))
    return f"background:rgb({r},{g},{b});color:{'#fff' if x > 0.5 else '#111827'}"


class LensGridView(View):
    """The logit lens over a whole run: a row per layer (embeddings first), a column per predicted position; each cell
    the layer's top token, coloured by the probability it gives the run's own token (outlined where they agree)."""

    kind = "lens-grid"

    def __init__(self, inside: Inside, lang: str, position: int | None = None):
        self.inside, self.lang, self.position = inside, lang, position

    def body_html(self) -> str:
        view, lang = self.inside, self.lang
        grid = view.grid()
        first, labels = view.trace.first_position, view.labels
        columns = range(first + 1, first + len(labels))
        head = '<th class="layer"></th>' + "".join(
            f'<th data-pos="{p}" class="{"picked" if p == self.position else ""}">{escape(visible_label(labels[p - first]))}</th>'
            for p in columns)
        rows = []
        for i in range(grid.chosen_prob.shape[0]):
            cells = []
            for j, p in enumerate(columns):
                top_id, prob, rank = int(grid.top_ids[i, j, 0]), float(grid.chosen_prob[i, j]), int(grid.chosen_rank[i, j])
                top = visible_label(view.codec.label(top_id))
                tip = (f"{layer_label(i, lang)} · {p}: {visible_label(labels[j + 1])} {pct(prob)} (#{rank})\n"
                       f"top: {top} {pct(float(grid.top_probs[i, j, 0]))}")
                classes = "cell" + (" hit" if rank == 1 else "") + (" picked" if p == self.position else "")
                cells.append(f'<td class="{classes}" style="{_blue(prob)}" title="{escape(tip)}">{escape(top)}</td>')
            rows.append(f'<tr><th class="layer">{escape(layer_label(i, lang))}</th>{"".join(cells)}</tr>')
        return (f'<h3>{escape(t("inside.fig.grid_title", lang))}</h3>'
                f'<div class="hint">{escape(t("notebook.grid_hint", lang))}</div>'
                f'<div class="meta">{escape(view.trace.computed_by)}</div>'
                f'<div class="lens-grid-wrap"><table class="lens-grid"><thead><tr>{head}</tr></thead>'
                f'<tbody>{"".join(rows)}</tbody></table></div>')


class PredictionView(View):
    """Inside one prediction (the Inside tab's report): the logit lens layer by layer, the sampling funnel, and the
    residual stream at the token read last."""

    kind = "prediction"

    def __init__(self, inside: Inside, report: dict, lang: str):
        self.inside, self.report, self.lang = inside, report, lang

    def body_html(self) -> str:
        report, lang = self.report, self.lang
        token = visible_label(report["token"]["text"])
        last = report["funnel"][-1]
        notices = "".join(f'<div class="notice">⚠️ {escape(n)}</div>' for n in report["notices"])
        return (f'<h3>{escape(t("notebook.prediction_title", lang, token=token, position=report["position"]))}</h3>'
                f'<div class="meta">{escape(report["computed_by"])}</div>{notices}'
                f'<h3>{escape(t("inside.fig.lens_title", lang, token=token))}</h3>{lens_table(report, lang)}'
                f'<h3>{escape(t("inside.fig.funnel_title", lang, token=token, prob=last["chosen_prob"], survivors=last["survivors"]))}</h3>'
                f'{_funnel_bars(report, lang)}{funnel_table(report, self.inside.codec, lang)}'
                f'<h3>{escape(t("inside.fig.residual_title", lang))}</h3>{_residual_table(report, lang)}')


def _funnel_bars(report: dict, lang: str) -> str:
    """Per stage of the funnel, the chosen token's probability as a bar, and how many tokens are left."""
    cells = []
    for stage in report["funnel"]:
        width = f"{100 * stage['chosen_prob']:.2f}%"
        cells.append(f'<div class="stage-name">{escape(stage_label(stage["name"], lang))}</div>'
                     f'<div class="track funnel-stage"><span class="bar" style="width:{width}"></span></div>'
                     f'<div>{pct(stage["chosen_prob"])} · {escape(t("inside.fig.survivors", lang))} {stage["survivors"]}</div>')
    return f'<div class="funnel">{"".join(cells)}</div>'


def _residual_table(report: dict, lang: str) -> str:
    """Per layer, the residual's norm, what the block added (attention and MLP apart on PyTorch), and its cosine with
    the layer before, with bars to the scale of the largest."""
    rows = report["residual"]
    split = rows[-1]["attention_norm"] is not None
    added = ("inside.fig.attention", "inside.fig.mlp") if split else ("inside.fig.added",)
    head = "".join(f"<th>{escape(t(k, lang))}</th>" for k in ("inside.col.layer", "inside.fig.residual", *added, "inside.fig.cosine"))
    peak = max(r["norm"] for r in rows) or 1.0
    peak_added = max([r[k] or 0.0 for r in rows for k in ("attention_norm", "mlp_norm", "added_norm")] + [1e-30])

    def bar(value: float | None, scale: float, colour: str = "") -> str:
        if value is None:
            return "<td>–</td>"
        return f'<td><span class="bar {colour}" style="width:{120 * value / scale:.1f}px"></span>{value:.2f}</td>'

    body = []
    for r in rows:
        parts = ([bar(r["attention_norm"], peak_added), bar(r["mlp_norm"], peak_added, "orange")] if split
                 else [bar(r["added_norm"], peak_added, "grey")])
        cosine = "–" if r["cosine_previous"] is None else f"{r['cosine_previous']:.3f}"
        body.append(f'<tr><td>{escape(layer_label(r["layer"], lang))}</td>{bar(r["norm"], peak)}{"".join(parts)}<td>{cosine}</td></tr>')
    return f'<table class="residual"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
