"""HTML for the token view, stats and banners. Every piece of model or user text goes through `html.escape`.

No Gradio here: the notebook views (playground.notebook) draw the same token view outside the app."""

from __future__ import annotations

import math
from html import escape

from ..analysis.beam_tree import TREE_STEPS, returned_ids, returned_rest, window
from ..records import Alternative, GenerationResult, TokenRecord
from ..text import Unit, hex_bytes, is_whole, unit_labels, visible_label
from ..locales import STRINGS, error_text
from ..locales import text as t

# GLTR's buckets: where the chosen token ranked in the model's distribution.
RANK_BUCKETS = [(1, "top-1", "#7ee787"), (10, "top-10", "#f9e27a"), (100, "top-100", "#f7a35c"), (None, "beyond 100", "#d2a8ff")]
# Probability of the chosen token, in the model's raw distribution.
PROB_BUCKETS = [(0.5, "≥ 50%", "#7ee787"), (0.1, "10–50%", "#c6e77e"), (0.01, "1–10%", "#f9e27a"), (None, "< 1%", "#f7a35c")]
PROMPT_NO_SCORE = "#e5e7eb"

CSS = """
#learn-chapter label { width: 100%; }
#learn-chapter .wrap { flex-direction: column; }
.learn-summary { margin: 0.25em 0; }
.code-notes p { margin: 0.2em 0; font-size: var(--text-sm); }
#history-table .runs-table { max-height: 360px; overflow: auto; border: 1px solid var(--border-color-primary);
                              border-radius: var(--radius-lg); }
#history-table table { width: 100%; border-collapse: collapse; font-size: var(--text-sm); }
#history-table th { position: sticky; top: 0; z-index: 1; text-align: left; font-weight: 600; padding: 6px 8px;
                    background: var(--background-fill-secondary); border-bottom: 1px solid var(--border-color-primary); }
#history-table td { padding: 5px 8px; border-bottom: 1px solid var(--border-color-primary); vertical-align: top;
                    overflow-wrap: anywhere; }
#history-table td[data-col="0"], #history-table td[data-col="1"], #history-table td[data-col="5"] {
    white-space: nowrap; font-variant-numeric: tabular-nums; }
#history-table tr[data-run-id] { cursor: pointer; }
#history-table tr[data-run-id]:hover { background: var(--background-fill-secondary); }
#history-table tr[data-run-id]:focus-visible { outline: 2px solid var(--color-accent); outline-offset: -2px; }
#history-table tr.picked { background: var(--color-accent-soft); }
#history-table td.match { min-width: 16em; }
#history-table td.match mark { background: #fde68a; color: #111827; border-radius: 2px; padding: 0 1px; }
#history-table .match-where { font-size: var(--text-xs); color: var(--body-text-color-subdued); white-space: nowrap; }
#history-table tr.empty td { text-align: center; padding: 16px; color: var(--body-text-color-subdued); }
.tokview { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 14px; line-height: 1.9;
           white-space: pre-wrap; word-break: break-word; padding: 8px; color: #111; background: #fff;
           border-radius: 8px; }
.tokview .tok { position: relative; border-radius: 3px; padding: 1px 0; cursor: pointer; outline: none; }
.tokview .tok.prompt { color: #374151; border-bottom: 2px dotted #6b7280; }
.tokview .tok:hover, .tokview .tok:focus { box-shadow: 0 0 0 2px #2563eb; }
.tokview .tip { display: none; position: absolute; left: 0; top: calc(100% + 3px); z-index: 50; min-width: 230px;
                background: #111827; color: #f9fafb; border-radius: 6px; padding: 6px 8px; font-size: 12px;
                line-height: 1.4; white-space: normal; box-shadow: 0 4px 14px rgba(0,0,0,.25); }
.tokview .tok:hover .tip, .tokview .tok:focus .tip { display: block; }
.tokview .tip table { border-collapse: collapse; width: 100%; margin: 4px 0 0; border: none; }
.tokview .tip tr, .tokview .tip td { background: transparent !important; color: #e5e7eb !important; border: none !important; }
.tokview .tip td { padding: 0 4px !important; white-space: pre; font-size: 12px; font-family: inherit; }
.tokview .tip td.p { text-align: right; }
.tokview .tip b { color: #fff !important; }
.tokview .tip div { color: #e5e7eb !important; margin: 0; }
.tokview .tip tr.chosen td { color: #7ee787 !important; font-weight: 600; }
.tokview .nl { color: #9ca3af; }
.tokview .unit { position: relative; display: inline-flex; flex-direction: column; vertical-align: bottom; border-radius: 3px;
                 line-height: 1.35; cursor: pointer; outline: none; margin: 0 0.5px; }
.tokview .unit.prompt { color: #374151; border-bottom: 2px dotted #6b7280; }
.tokview .unit:focus { box-shadow: 0 0 0 2px #2563eb; }
.tokview .unit .uchar { padding: 0 1px; text-align: center; }
.tokview .unit .pieces { display: flex; gap: 1px; height: 6px; }
.tokview .unit .piece { flex: 1 1 0; min-width: 3px; border-radius: 1px; padding: 0; border: 1px solid rgba(0,0,0,.25); }
.tokview .unit .piece:hover, .tokview .unit .piece:focus { box-shadow: 0 0 0 2px #2563eb; }
.tokview .unit:hover:not(:has(.piece:hover)) > .tip, .tokview .unit:focus > .tip { display: block; }
.tokview .tok.special { font-style: italic; color: #4b5563; font-size: 12px; }
.tokview .tok.bytes { font-size: 11px; color: #7c2d12; }
.tokview .tok.diverge, .tokview .unit.diverge { outline: 3px solid #dc2626; outline-offset: 1px; }
.beamtree { display: flex; flex-wrap: wrap; gap: 10px 6px; white-space: normal; line-height: 1.5; }
.beamtree .beamcol { display: flex; flex-direction: column; gap: 3px; min-width: max-content; }
.beamtree .beamstep { font-size: 11px; color: #6b7280; text-align: center; }
.beamtree .tok.beamnode { display: block; padding: 1px 4px; border: 1px solid #d1d5db; font-size: 12px; white-space: nowrap; }
.beamtree .tok.beamnode small { color: #6b7280; font-size: 10px; margin-left: 3px; }
.beamtree .tok.beamnode.pruned { color: #9ca3af; background: #f3f4f6; }
.beamtree .tok.beamnode.running { background: #dbeafe; }
.beamtree .tok.beamnode.finished { background: #dcfce7; font-weight: 600; border-style: double; border-width: 3px; }
.beamtree .tok.beamnode.returned { border: 2px solid #16a34a; }
.beamtree .tok.beamnode.beamrest { white-space: normal; max-width: 40em; }
.legend { display: flex; gap: 10px; flex-wrap: wrap; font-size: 13px; margin: 4px 0 2px; color: inherit; }
.legend span.sw { display: inline-block; width: 14px; height: 14px; border-radius: 3px; vertical-align: -2px; margin-right: 4px; }
.banner { padding: 8px 12px; border-radius: 8px; background: #eef2ff; color: #1e1b4b; font-size: 14px; }
.banner.warn { background: #fef3c7; color: #78350f; }
.notice { color: #92400e; font-size: 13px; }
.samples { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 10px; }
.samples .sample { border: 1px solid #d1d5db; border-radius: 8px; padding: 6px; min-width: 0; }
.samples .sample.chosen { border-color: #2563eb; box-shadow: 0 0 0 1px #2563eb; }
.samples .sample h4 { margin: 2px 4px; font-size: 13px; }
.samples .sample .meta { font-size: 12px; color: #4b5563; margin: 0 4px 4px; }
.samples .tokview { font-size: 13px; line-height: 1.7; max-height: 320px; overflow-y: auto; }
.samples.strategies { grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); }
.samples.strategies .tokview + .tokview { margin-top: 6px; border-top: 1px dashed #d1d5db; border-radius: 0 0 8px 8px; }
.strategies-table { overflow-x: auto; }
.strategies-table table { border-collapse: collapse; font-size: var(--text-sm); width: 100%; border: none; }
.strategies-table th, .strategies-table td { padding: 4px 8px; border: none; border-bottom: 1px solid var(--border-color-primary); }
.strategies-table thead th { text-align: right; vertical-align: bottom; background: var(--background-fill-secondary); }
.strategies-table thead th:first-child, .strategies-table tbody th { text-align: left; font-weight: 500; min-width: 11em;
                                                                     white-space: normal; }
.strategies-table .nw { white-space: nowrap; }
.strategies-table td { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
"""


def token_colour(record: TokenRecord, mode: str) -> str:
    if record.raw_prob is None:
        return PROMPT_NO_SCORE
    if mode == "rank":
        return _rank_colour(record.rank)
    return _prob_colour(record.raw_prob)


def _rank_colour(rank: int | None) -> str:
    if rank is None:  # a serving engine did not rank it (outside the alternatives it gave)
        return PROMPT_NO_SCORE
    for limit, _, colour in RANK_BUCKETS:
        if limit is None or rank <= limit:
            return colour
    raise AssertionError("buckets end with a catch-all")


def _prob_colour(prob: float) -> str:
    for limit, _, colour in PROB_BUCKETS:
        if limit is None or prob >= limit:
            return colour
    raise AssertionError("buckets end with a catch-all")


def unit_colour(records: list[TokenRecord], mode: str) -> str:
    """A character spelled by several tokens: coloured by their joint probability, or by the worst rank among them."""
    scored = [r for r in records if r.raw_prob is not None]
    if not scored:
        return PROMPT_NO_SCORE
    if mode == "rank":
        return _rank_colour(None if any(r.rank is None for r in scored) else max(r.rank for r in scored))
    return _prob_colour(math.prod(r.raw_prob for r in scored))


def visible(text: str) -> str:
    """Escape token text, and show a newline as ↵ followed by the break itself."""
    return escape(text).replace("\n", '<span class="nl">↵</span>\n')


def pct(p: float) -> str:
    """A probability for people: 12.3%, and small ones with two significant digits (0.0042%) instead of 0.0%."""
    return f"{p:.1%}" if p >= 0.001 else f"{p * 100:.2g}%"


def _alternative_text(text: str, data: bytes) -> str:
    """An alternative as the tooltip shows it: its characters, or its bytes when it is only part of a character."""
    if data and not is_whole(data):
        return f"{hex_bytes(data)} …"
    return visible_label(text)


def _tooltip(record: TokenRecord, lang: str, unit: Unit | None = None, index: int = 0) -> str:
    """The card for one token: what it is (and which character it helps spell), its numbers, its alternatives."""
    part = ""
    if unit is not None and unit.size > 1:
        part = f"<div>{escape(t('tip.piece', lang, i=index + 1, n=unit.size, char=unit.text))}</div>"
    name = escape(visible_label(record.text) if is_whole(record.bytes) else hex_bytes(record.bytes))
    data = f" · {t('tip.bytes', lang)} {hex_bytes(record.bytes)}" if record.bytes else ""
    if record.raw_prob is None:
        # Past the first token, only a serving engine that did not echo the prompt's logprobs leaves a token unscored.
        why = t("tip.first", lang) if record.position == 0 else t("remote.prompt_unscored", lang)
        return f'<span class="tip"><b>{name}</b>{escape(data)}{part}<div>{escape(why)}</div></span>'
    rows = "".join(
        f'<tr class="{"chosen" if alt.token_id == record.token_id else ""}"><td>{escape(_alternative_text(alt.text, alt.bytes))}</td>'
        f'<td class="p">{pct(alt.prob)}</td></tr>'
        for alt in record.top
    )
    sampled = ""
    if not record.is_prompt and record.prob is not None and abs(record.prob - record.raw_prob) > 1e-6:
        sampled = " · " + t("tip.sampled", lang, p=pct(record.prob))
    # A serving engine reports neither the entropy nor a rank outside its alternatives: said so, not made up.
    rank = t("remote.unavailable", lang) if record.rank is None else record.rank
    entropy = (t("remote.entropy_unavailable", lang) if record.entropy_bits is None
               else t("tip.entropy", lang, bits=f"{record.entropy_bits:.2f}"))
    head = (
        f"<b>{name}</b>{escape(data)}{part}<div>p {pct(record.raw_prob)}{escape(sampled)} · {escape(t('tip.rank', lang))} "
        f"{escape(str(rank))} · {escape(entropy)}</div>"
    )
    return f'<span class="tip">{head}<table>{rows}</table></span>'


def _unit_tooltip(unit: Unit, records: list[TokenRecord], lang: str) -> str:
    probs = [r.raw_prob for r in records]
    lines = [f"<b>{escape(visible_label(unit.text))}</b> · {escape(t('tip.tokens', lang, n=unit.size))}"]
    if all(p is not None for p in probs):
        lines.append(escape(t("tip.joint", lang, p=pct(math.prod(probs)))))
    if not unit.complete:
        lines.append(escape(t("tip.incomplete", lang)))
    rows = "".join(
        f"<tr><td>{hex_bytes(r.bytes)}</td><td class='p'>{'' if r.raw_prob is None else pct(r.raw_prob)}</td>"
        f"<td class='p'>{'' if r.rank is None else '#' + str(r.rank)}</td></tr>"
        for r in records
    )
    return f'<span class="tip">{"<br>".join(lines)}<table>{rows}</table><div>{escape(t("tip.pieces_hint", lang))}</div></span>'


def token_view_html(result: GenerationResult | None, mode: str = "prob", include_prompt: bool = True,
                    mark_position: int | frozenset[int] | None = None, lang: str = "en") -> str:
    """Each character a coloured span; hover or focus (click/Tab) shows its probability and alternatives.

    A character that GPT-2's byte-level BPE spelled with several tokens is one unit: the character,
    coloured by the joint probability of its tokens, over a strip with one segment per token, each
    reachable on its own. `mark_position` (a sequence position, or a set of them) is outlined: where a compared run
    first diverged, a branch's swapped token, the tokens picked by hand one step at a time (the unit holding one is
    outlined too).
    """
    if isinstance(mark_position, int):
        mark_position = frozenset((mark_position,))
    mark_position = mark_position or frozenset()
    if result is None:
        return f'<div class="tokview" style="color:#6b7280">{escape(t("view.empty", lang))}</div>'
    spans = []
    for unit, records in result.units():
        if not include_prompt and all(r.is_prompt for r in records):
            continue
        if len(records) == 1:
            spans.append(_token_span(records[0], unit, mode, mark_position, lang))
            continue
        prompt = " prompt" if records[-1].is_prompt else ""
        marked = " diverge" if any(r.position in mark_position for r in records) else ""
        segments = "".join(
            f'<span class="tok piece{" diverge" if r.position in mark_position else ""}" tabindex="0" data-pos="{r.position}" '
            f'style="background:{token_colour(r, mode)}">{_tooltip(r, lang, unit, i)}</span>'
            for i, r in enumerate(records)
        )
        spans.append(
            f'<span class="unit{prompt}{marked}" tabindex="0" data-pos="{records[0].position}" '
            f'style="background:{unit_colour(records, mode)}"><span class="uchar">{visible(unit.text)}</span>'
            f'<span class="pieces">{segments}</span>{_unit_tooltip(unit, records, lang)}</span>'
        )
    return f'<div class="tokview">{"".join(spans)}</div>'


def _token_span(record: TokenRecord, unit: Unit, mode: str, mark_position: frozenset[int], lang: str) -> str:
    cls = "tok prompt" if record.is_prompt else "tok"
    if record.position in mark_position:
        cls += " diverge"
    text = unit.text
    if not record.bytes:  # [CLS], <|endoftext|>: no text of its own, shown by name
        cls += " special"
        text = record.text
    elif not unit.complete:
        cls += " bytes"
        text = hex_bytes(record.bytes)
    return (f'<span class="{cls}" tabindex="0" data-pos="{record.position}" style="background:{token_colour(record, mode)}">'
            f"{visible(text)}{_tooltip(record, lang)}</span>")


def output_token_name(result: GenerationResult, index: int) -> str:
    """Generated token `index` named by the character it spells (`注(2/3)`), its bytes as hex when it spells none."""
    position = len(result.prompt_tokens) + index
    record = result.tokens[index]
    if not record.bytes:
        return record.text
    for unit, records in result.units():
        if unit.start <= position < unit.end:
            if not unit.complete:
                return hex_bytes(record.bytes)
            return visible_label(unit.text if unit.size == 1 else f"{unit.text}({position - unit.start + 1}/{unit.size})")
    raise AssertionError("every token belongs to a unit")


def legend_html(mode: str, lang: str = "en") -> str:
    buckets = RANK_BUCKETS if mode == "rank" else PROB_BUCKETS
    title = t("legend.rank" if mode == "rank" else "legend.prob", lang)
    items = "".join(f'<span><span class="sw" style="background:{c}"></span>{escape(t("legend.beyond", lang) if label == "beyond 100" else label)}</span>'
                    for _, label, c in buckets)
    prompt = f'<span><span class="sw" style="background:{PROMPT_NO_SCORE};border-bottom:2px dotted #6b7280"></span>{escape(t("legend.prompt", lang))}</span>'
    return f'<div class="legend"><b>{escape(title)}:</b>{items}{prompt}</div>'


def stats_markdown(result: GenerationResult | None, running: bool = False, lang: str = "en") -> str:
    if result is None:
        return ""
    m = result.metrics()
    parts = [f"**{escape(result.info.label())}**"]
    parts.append(t("stats.ttft", lang, ms=f"{m['ttft_ms']:.0f}") if m["ttft_ms"] is not None else t("stats.ttft_pending", lang))
    tps = m["decode_tokens_per_s"]
    parts.append(t("stats.tps", lang, tps=f"{tps:.1f}") if tps else t("stats.tps_pending", lang))
    ppl = m["prompt_perplexity"]
    parts.append(t("stats.ppl", lang, ppl=f"{ppl:.1f}") if ppl is not None else t("stats.ppl_na", lang))
    parts.append(t("stats.counts", lang, prompt=m["prompt_token_count"], new=m["new_token_count"]))
    parts.append(t("stats.seed", lang, seed=result.settings.seed))
    finish_key = f"stats.finish.{result.finish_reason}"
    status = t("stats.running", lang) if running else (t(finish_key, lang) if finish_key in STRINGS["en"] else result.finish_reason)
    parts.append(status)
    if result.run_id is not None:
        parts.append(t("stats.saved", lang, id=result.run_id))
    if result.branch_position is not None:
        parent = (t("stats.parent_run", lang, id=result.parent_run_id) if result.parent_run_id is not None
                  else t("stats.parent_unsaved", lang))
        parts.append(t("stats.branched", lang, parent=parent, position=result.branch_position))
    lines = [" · ".join(parts)]
    lines += [f"⚠️ {escape(error_text(n, lang))}" for n in result.notices]
    if result.info.notice:
        lines.append(f"⚠️ {escape(error_text(result.info.notice, lang))}")
    return "\n\n".join(lines)


def banner_html(model_name: str, requested: str, notice: str | None, lang: str = "en") -> str:
    text = t("banner.model", lang, model=escape(model_name))
    if notice:
        text += t("banner.asked", lang, requested=escape(requested))
        return f'<div class="banner warn">{text}{t("banner.sep", lang)}{escape(error_text(notice, lang))}</div>'
    return f'<div class="banner">{text}</div>'


def session_html(share_url: str | None, username: str | None, lang: str = "en") -> str:
    """The public link (when there is one) and who is logged in, with a way out, in `lang`."""
    parts = []
    if share_url:
        url = escape(share_url)
        parts.append(f'{escape(t("session.public_link", lang))} <a href="{url}" target="_blank" rel="noopener">{url}</a>')
    if username:
        parts.append(f'{escape(t("session.logged_in", lang))} <b>{escape(username)}</b> · '
                     f'<a href="logout">{escape(t("session.log_out", lang))}</a>')
    return f'<div class="banner">{" · ".join(parts)}</div>' if parts else ""


def surprisal_figure(result: GenerationResult | None, lang: str = "en"):
    """Surprisal (-log2 p, bits) of every token given its prefix, prompt and output as separate lines."""
    import plotly.graph_objects as go

    figure = go.Figure()
    if result is not None:
        records_all = result.prompt_tokens + result.tokens
        names = dict(zip((r.position for r in records_all), unit_labels([r.bytes for r in records_all])))
        for name, records, colour in ((t("surprisal.prompt", lang), result.prompt_tokens, "#6b7280"),
                                      (t("surprisal.output", lang), result.tokens, "#2563eb")):
            scored = [r for r in records if r.raw_prob]
            figure.add_trace(go.Scatter(
                x=[r.position for r in scored], y=[-math.log2(r.raw_prob) for r in scored], mode="lines+markers", name=name,
                line={"color": colour}, marker={"size": 4},
                text=[escape(visible_label(names[r.position] if r.bytes else r.text), quote=False) for r in scored],  # plotly reads some HTML
                customdata=[[r.rank, r.entropy_bits] for r in scored],
                hovertemplate=(f"%{{x}}: %{{text}}<br>{t('surprisal.hover', lang)} %{{y:.2f}} bits<br>{t('surprisal.rank', lang)} "
                               f"%{{customdata[0]}} · {t('surprisal.entropy', lang)} %{{customdata[1]:.2f}} bits<extra></extra>"),
            ))
    figure.update_layout(height=260, margin={"l": 50, "r": 20, "t": 30, "b": 40}, xaxis_title=t("surprisal.x", lang),
                         yaxis_title=t("surprisal.y", lang), title=t("surprisal.title", lang), legend={"orientation": "h"})
    return figure


def samples_html(results: list[GenerationResult], mode: str = "prob", chosen: int = 0, running: bool = False,
                 lang: str = "en") -> str:
    """N samples of one prompt side by side (one column on a narrow screen): each its output's token view, sequence
    log-probability, perplexity and finish reason. Empty for a run of one sample (the main view shows it)."""
    if len(results) < 2:
        return ""
    cards = []
    for i, result in enumerate(results):
        ppl = result.perplexity
        finish_key = f"stats.finish.{result.finish_reason}"
        status = (t("stats.running", lang) if result.finish_reason == "running" and running
                  else t(finish_key, lang) if finish_key in STRINGS["en"] else result.finish_reason)
        meta = " · ".join([
            t("samples.tokens", lang, count=len(result.tokens)),
            t("samples.logprob", lang, value=f"{result.sequence_logprob:.2f}"),
            t("samples.ppl", lang, value=f"{ppl:.2f}" if ppl is not None else "–"),
            status,
        ])
        cards.append(f'<div class="sample{" chosen" if i == chosen else ""}" data-sample="{i}">'
                     f'<h4>{escape(t("samples.title", lang, index=i, seed=result.settings.seed))}</h4>'
                     f'<div class="meta">{escape(meta)}</div>{token_view_html(result, mode, include_prompt=False, lang=lang)}</div>')
    group = results[0].group_id
    footer = f'<div class="meta">{escape(t("samples.group", lang, group=group))}</div>' if group and not running else ""
    return f'<div class="samples" id="samples-grid">{"".join(cards)}</div>{footer}'


def _node_record(node: dict) -> TokenRecord:
    """A beam tree node's token as a token record, for the token view's card."""
    top = [Alternative(a["token_id"], a["text"], a["prob"], bytes(a.get("bytes", []))) for a in node.get("top", [])]
    return TokenRecord(position=node.get("position", node["step"]), token_id=node["token_id"], text=node.get("text", ""),
                       is_prompt=False, raw_prob=node.get("raw_prob"), prob=node.get("prob"), rank=node.get("rank"),
                       entropy_bits=node.get("entropy_bits"), top=top, bytes=bytes(node.get("bytes", [])))


def beam_tree_html(tree: dict | None, lang: str = "en") -> str:
    """A beam search's tree: a column per step, its continuations best first, each with its length-normalised score and
    the beam it continues; pruned ones grey, finished ones marked, the returned sequences' paths outlined. Hover or
    focus shows the token view's card, with the beam's numbers under it. A large tree is drawn from its first steps
    (analysis/beam_tree.py's `window`), with a note saying so and the returned sequences' rest after them as text.
    Empty for a run without beams."""
    if not tree:
        return ""
    on_path = returned_ids(tree)
    by_id = {node["id"]: node for node in tree["nodes"]}
    legend = (f'<div class="legend"><span><span class="sw" style="background:#dbeafe"></span>{escape(t("beams.running", lang))}</span>'
              f'<span><span class="sw" style="background:#dcfce7;border:2px double #6b7280"></span>{escape(t("beams.finished", lang))}</span>'
              f'<span><span class="sw" style="background:#f3f4f6"></span>{escape(t("beams.pruned", lang))}</span>'
              f'<span><span class="sw" style="border:2px solid #16a34a"></span>{escape(t("beams.returned", lang))}</span></div>')
    def after(node: dict) -> str:  # the token it continues: the prompt's last at the first step
        parent = by_id.get(node["parent"])
        return t("beams.from", lang, token=visible_label(parent.get("text", str(parent["token_id"])))) if parent else ""

    steps, drawn, total = window(tree)
    cols = []
    for step, nodes in zip(drawn, steps):
        cells = []
        for node in nodes:
            numbers = t("beams.tip", lang, beam=node["row"] + 1, logprob=f"{node['logprob']:.3f}",
                        cumulative=f"{node['cumulative']:.3f}", score=f"{node['score']:.3f}", status=t(f"beams.{node['status']}", lang))
            card = _tooltip(_node_record(node), lang)[:-len("</span>")] if "text" in node else '<span class="tip">'
            card += f"<div>{escape(numbers)}</div></span>"
            returned = " returned" if node["id"] in on_path else ""
            cells.append(f'<span class="tok beamnode {node["status"]}{returned}" tabindex="0" data-node="{node["id"]}">'
                         f'{visible(visible_label(node.get("text", str(node["token_id"]))))}<small>{node["score"]:.2f} '
                         f'{escape(after(node))}</small>{card}</span>')
        cols.append(f'<div class="beamcol"><div class="beamstep">{escape(t("beams.step", lang, step=step + 1))}</div>{"".join(cells)}</div>')
    note = ""
    if len(drawn) < total:  # the returned sequences go on as text after the last drawn step
        lines = []
        for i, (end, rest) in enumerate(returned_rest(tree, drawn[-1])):
            text = "".join(visible_label(node.get("text", str(node["token_id"]))) for node in rest)
            label = escape(t("beams.rest_line", lang, n=i + 1, score=format(end["score"], ".2f")))
            lines.append(f'<span class="tok beamnode {end["status"]} returned beamrest">{label} {visible("…" + text) if text else ""}</span>')
        cols.append(f'<div class="beamcol"><div class="beamstep">{escape(t("beams.rest", lang, first=drawn[-1] + 2, last=total))}</div>'
                    f'{"".join(lines)}</div>')
        nodes = sum(len(column) for column in steps)
        note = (f'<div class="meta" id="beam-tree-cut">'
                f'{escape(t("beams.cut", lang, last=drawn[-1] + 1, total=total, shown=nodes, nodes=len(tree["nodes"]), steps=TREE_STEPS))}</div>')
    title = escape(t("beams.title", lang, beams=tree["num_beams"], penalty=tree["length_penalty"], early=str(tree["early_stopping"]).lower()))
    return f'<div class="beamtree-wrap"><b>{title}</b>{legend}{note}<div class="tokview beamtree" id="beam-tree-view">{"".join(cols)}</div></div>'
