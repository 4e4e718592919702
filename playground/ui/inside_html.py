"""The Inside view's tables as HTML (logit lens, sampling funnel) and its layer and stage names, in a language.

No Gradio here: the Inside tab and the notebook's Inside view (playground.notebook) draw the same tables."""

from __future__ import annotations

from html import escape

from ..locales import EN
from ..locales import text as t
from ..text import TokenCodec, visible_label
from .render import pct


def layer_label(i: int, lang: str) -> str:
    return t("inside.layer_embeddings", lang) if i == 0 else t("inside.layer_block", lang, n=i - 1)


def stage_label(name: str, lang: str) -> str:
    key = f"inside.stage.{name}"
    return t(key, lang) if key in EN else name  # a processor the loop gained later shows by its name


def lens_table(report: dict, lang: str) -> str:
    head = "".join(f"<th>{escape(t(k, lang))}</th>" for k in ("inside.col.layer", "inside.col.prob", "inside.col.rank", "inside.col.top"))
    rows = []
    for r in report["logit_lens"]:
        top = " · ".join(f"<code>{escape(visible_label(a['text']))}</code> {a['prob']:.3f}" for a in r["top"])
        rows.append(f"<tr><td>{escape(layer_label(r['layer'], lang))}</td><td>{r['chosen_prob']:.4f}</td>"
                    f"<td>{r['chosen_rank']}</td><td>{top}</td></tr>")
    return f'<table class="inside-table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def funnel_table(report: dict, codec: TokenCodec, lang: str) -> str:
    head = "".join(f"<th>{escape(t(k, lang))}</th>" for k in ("inside.col.stage", "inside.col.survivors", "inside.col.prob", "inside.col.top"))
    rows = []
    for s in report["funnel"]:
        # The stage's survivors only (at most 5); a small probability as 0.042%, never a 0.000 that reads as cut.
        top = " · ".join(f"<code>{escape(visible_label(codec.label(a['token_id'])))}</code> {pct(a['prob'])}" for a in s["top"][:5])
        rows.append(f"<tr><td>{escape(stage_label(s['name'], lang))}</td><td>{s['survivors']}</td>"
                    f"<td>{s['chosen_prob']:.5f}</td><td>{top}</td></tr>")
    return f'<table class="inside-table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
