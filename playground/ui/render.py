"""HTML for the token view, stats and banners. Every piece of model or user text goes through `html.escape`."""

from __future__ import annotations

import math
from html import escape

from ..generation import GenerationResult, TokenRecord

# GLTR's buckets: where the chosen token ranked in the model's distribution.
RANK_BUCKETS = [(1, "top-1", "#7ee787"), (10, "top-10", "#f9e27a"), (100, "top-100", "#f7a35c"), (None, "beyond 100", "#d2a8ff")]
# Probability of the chosen token, in the model's raw distribution.
PROB_BUCKETS = [(0.5, "≥ 50%", "#7ee787"), (0.1, "10–50%", "#c6e77e"), (0.01, "1–10%", "#f9e27a"), (None, "< 1%", "#f7a35c")]
PROMPT_NO_SCORE = "#e5e7eb"

CSS = """
.tokview { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 14px; line-height: 1.9;
           white-space: pre-wrap; word-break: break-word; padding: 8px; color: #111; background: #fff;
           border-radius: 8px; }
.tokview .tok { position: relative; border-radius: 3px; padding: 1px 0; cursor: pointer; outline: none; }
.tokview .tok.prompt { opacity: 0.7; border-bottom: 2px dotted #6b7280; }
.tokview .tok:hover, .tokview .tok:focus { box-shadow: 0 0 0 2px #2563eb; }
.tokview .tip { display: none; position: absolute; left: 0; top: 1.8em; z-index: 50; min-width: 230px;
                background: #111827; color: #f9fafb; border-radius: 6px; padding: 6px 8px; font-size: 12px;
                line-height: 1.4; white-space: normal; box-shadow: 0 4px 14px rgba(0,0,0,.25); }
.tokview .tok:hover .tip, .tokview .tok:focus .tip { display: block; }
.tokview .tip table { border-collapse: collapse; width: 100%; margin: 4px 0 0; border: none; }
.tokview .tip tr, .tokview .tip td { background: transparent !important; color: #e5e7eb !important; border: none !important; }
.tokview .tip td { padding: 0 4px !important; white-space: pre; font-size: 12px; }
.tokview .tip td.p { text-align: right; }
.tokview .tip b { color: #fff !important; }
.tokview .tip tr.chosen td { color: #7ee787 !important; font-weight: 600; }
.tokview .nl { color: #9ca3af; }
.tokview .tok.diverge { outline: 3px solid #dc2626; outline-offset: 1px; }
.legend { display: flex; gap: 10px; flex-wrap: wrap; font-size: 13px; margin: 4px 0 2px; color: inherit; }
.legend span.sw { display: inline-block; width: 14px; height: 14px; border-radius: 3px; vertical-align: -2px; margin-right: 4px; }
.banner { padding: 8px 12px; border-radius: 8px; background: #eef2ff; color: #1e1b4b; font-size: 14px; }
.banner.warn { background: #fef3c7; color: #78350f; }
.notice { color: #92400e; font-size: 13px; }
"""


def token_colour(record: TokenRecord, mode: str) -> str:
    if record.raw_prob is None:
        return PROMPT_NO_SCORE
    if mode == "rank":
        for limit, _, colour in RANK_BUCKETS:
            if limit is None or record.rank <= limit:
                return colour
    for limit, _, colour in PROB_BUCKETS:
        if limit is None or record.raw_prob >= limit:
            return colour
    raise AssertionError("buckets end with a catch-all")


def visible(text: str) -> str:
    """Escape token text, and show a newline as ↵ followed by the break itself."""
    return escape(text).replace("\n", '<span class="nl">↵</span>\n')


def _tooltip(record: TokenRecord) -> str:
    if record.raw_prob is None:
        return '<span class="tip">First token: no prefix to predict it from.</span>'
    rows = "".join(
        f'<tr class="{"chosen" if tid == record.token_id else ""}"><td>{escape(repr(text)[1:-1])}</td><td class="p">{p:.1%}</td></tr>'
        for tid, text, p in record.top
    )
    sampled = ""
    if not record.is_prompt and record.prob is not None and abs(record.prob - record.raw_prob) > 1e-6:
        sampled = f" · sampled from {record.prob:.1%}"
    head = (
        f"<b>{escape(repr(record.text)[1:-1])}</b> · p {record.raw_prob:.1%}{sampled} · rank {record.rank} · "
        f"entropy {record.entropy_bits:.2f} bits"
    )
    return f'<span class="tip">{head}<table>{rows}</table></span>'


def token_view_html(result: GenerationResult | None, mode: str = "prob", include_prompt: bool = True,
                    mark_position: int | None = None) -> str:
    """Each token a coloured span; hover or focus (click/Tab) shows its top alternatives.

    `mark_position` (a sequence position) is outlined: where a compared run first diverged.
    """
    if result is None:
        return '<div class="tokview" style="color:#6b7280">Generate something to see each token\'s probability.</div>'
    records = (result.prompt_tokens if include_prompt else []) + result.tokens
    spans = []
    for record in records:
        cls = "tok prompt" if record.is_prompt else "tok"
        if record.position == mark_position:
            cls += " diverge"
        spans.append(
            f'<span class="{cls}" tabindex="0" data-pos="{record.position}" style="background:{token_colour(record, mode)}">'
            f"{visible(record.text)}{_tooltip(record)}</span>"
        )
    return f'<div class="tokview">{"".join(spans)}</div>'


def legend_html(mode: str) -> str:
    buckets = RANK_BUCKETS if mode == "rank" else PROB_BUCKETS
    title = "Rank of the chosen token (GLTR)" if mode == "rank" else "Model's probability of the chosen token"
    items = "".join(f'<span><span class="sw" style="background:{c}"></span>{escape(label)}</span>' for _, label, c in buckets)
    prompt = f'<span><span class="sw" style="background:{PROMPT_NO_SCORE};border-bottom:2px dotted #6b7280"></span>prompt (dotted)</span>'
    return f'<div class="legend"><b>{escape(title)}:</b>{items}{prompt}</div>'


def stats_markdown(result: GenerationResult | None, running: bool = False) -> str:
    if result is None:
        return ""
    m = result.metrics()
    parts = [f"**{escape(result.info.label())}**"]
    parts.append(f"time to first token **{m['ttft_ms']:.0f} ms**" if m["ttft_ms"] is not None else "time to first token …")
    tps = m["decode_tokens_per_s"]
    parts.append(f"**{tps:.1f} tokens/s**" if tps else "tokens/s …")
    ppl = m["prompt_perplexity"]
    parts.append(f"prompt perplexity **{ppl:.1f}**" if ppl is not None else "prompt perplexity n/a")
    parts.append(f"{m['prompt_token_count']} prompt + {m['new_token_count']} new tokens")
    parts.append(f"seed {result.settings.seed}")
    status = "generating…" if running else {
        "length": "stopped at max tokens", "eos": "ended at end-of-text", "stop_sequence": "hit a stop sequence",
        "stopped": "stopped by you",
    }.get(result.finish_reason, result.finish_reason)
    parts.append(status)
    if result.run_id is not None:
        parts.append(f"saved as run #{result.run_id}")
    if result.branch_position is not None:
        parent = f"run #{result.parent_run_id}" if result.parent_run_id is not None else "an unsaved run"
        parts.append(f"branched from {parent} at position {result.branch_position}")
    lines = [" · ".join(parts)]
    lines += [f"⚠️ {escape(n)}" for n in result.notices]
    if result.info.notice:
        lines.append(f"⚠️ {escape(result.info.notice)}")
    return "\n\n".join(lines)


def banner_html(model_name: str, requested: str, notice: str | None) -> str:
    text = f"Model in use: <b>{escape(model_name)}</b>"
    if notice:
        text += f" (asked for {escape(requested)})"
        return f'<div class="banner warn">{text}. {escape(notice)}</div>'
    return f'<div class="banner">{text}</div>'


def session_html(share_url: str | None, username: str | None) -> str:
    """The public link (when there is one) and who is logged in, with a way out."""
    parts = []
    if share_url:
        url = escape(share_url)
        parts.append(f'Public link: <a href="{url}" target="_blank" rel="noopener">{url}</a>')
    if username:
        parts.append(f'Logged in as <b>{escape(username)}</b> · <a href="logout">Log out</a>')
    return f'<div class="banner">{" · ".join(parts)}</div>' if parts else ""


def surprisal_figure(result: GenerationResult | None):
    """Surprisal (-log2 p, bits) of every token given its prefix, prompt and output as separate lines."""
    import plotly.graph_objects as go

    figure = go.Figure()
    if result is not None:
        for name, records, colour in (("prompt", result.prompt_tokens, "#6b7280"), ("output", result.tokens, "#2563eb")):
            scored = [r for r in records if r.raw_prob]
            figure.add_trace(go.Scatter(
                x=[r.position for r in scored], y=[-math.log2(r.raw_prob) for r in scored], mode="lines+markers", name=name,
                line={"color": colour}, marker={"size": 4},
                text=[escape(repr(r.text)[1:-1], quote=False) for r in scored],  # plotly reads some HTML
                customdata=[[r.rank, r.entropy_bits] for r in scored],
                hovertemplate="%{x}: %{text}<br>surprisal %{y:.2f} bits<br>rank %{customdata[0]} · entropy %{customdata[1]:.2f} bits<extra></extra>",
            ))
    figure.update_layout(height=260, margin={"l": 50, "r": 20, "t": 30, "b": 40}, xaxis_title="position",
                         yaxis_title="surprisal (bits)", title="How surprised the model was by each token", legend={"orientation": "h"})
    return figure
