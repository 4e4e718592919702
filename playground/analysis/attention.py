"""Attention of a finished run, from the backend that produced it: tensors, figures, and files to download."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np

from ..backends.base import Backend
from ..errors import Notice
from ..figures import cjk_font_notice
from ..text import TokenCodec, unit_labels, visible_label

MAX_ATTENTION_TOKENS = 256  # (12 layers, 12 heads, 256, 256) float32 is 38 MB; 1024 tokens would be 600 MB


@dataclass
class RunAttention:
    """Attention probabilities over (a window of) a run's tokens, as one backend computed them."""

    weights: np.ndarray  # (layers, heads, T, T); row q = what query token q attended to
    token_ids: list[int]
    labels: list[str]  # per token: its character(s), with (i/n) for the n tokens of one character; escape before markup
    first_position: int  # position of the window's first token in the run
    computed_by: str  # e.g. "onnx int8 · CPUExecutionProvider"
    notice: str | None = None

    @property
    def n_layers(self) -> int:
        return self.weights.shape[0]

    @property
    def n_heads(self) -> int:
        return self.weights.shape[1]

    def matrix(self, layer: int, head: int | None) -> np.ndarray:
        """(T, T) attention of one head, or the mean over heads when `head` is None."""
        layer_weights = self.weights[layer]  # (H, T, T)
        return layer_weights.mean(0) if head is None else layer_weights[head]

    def save_npz(self, path: Path) -> Path:
        np.savez_compressed(path, attention=self.weights, token_ids=np.asarray(self.token_ids),
                            tokens=np.asarray(self.labels), first_position=self.first_position)
        return path


def compute_attention(backend: Backend, token_ids: list[int], codec: TokenCodec,
                      cap: int = MAX_ATTENTION_TOKENS) -> RunAttention:
    """Once per run: one forward pass over the run's final sequence (its last `cap` tokens at most)."""
    notice = None
    first = 0
    if len(token_ids) > cap:
        first = len(token_ids) - cap
        notice = Notice(key="notice.attention_window", tokens=len(token_ids), cap=cap, first=first)
    window = token_ids[first:]
    weights = np.asarray(backend.attention(window), dtype=np.float32)  # (L, H, T, T)
    info = backend.info
    # Labels name whole characters: a token that is only some bytes of one shows it with its index.
    pieces = codec.pieces(window, token_ids[first - 1] if first else None)
    names = unit_labels(pieces)
    labels = [codec.label(i) if codec.is_silent(i) else name for i, name in zip(window, names)]
    return RunAttention(weights, window, labels, first, f"{info.backend} {info.variant} · {info.provider}", notice)


def _tick_labels(run: RunAttention) -> list[str]:
    # Plotly reads a subset of HTML in labels: escape <, > and & (it shows &quot; literally, so quotes
    # stay), and show whitespace so tokens stay visible.
    return [escape(visible_label(t), quote=False) for t in run.labels]


def heatmap_figure(run: RunAttention, layer: int, head: int | None, query: int | None = None):
    """Interactive plotly heatmap: query tokens down, key tokens across, exact values on hover."""
    import plotly.graph_objects as go

    matrix = run.matrix(layer, head)
    labels = _tick_labels(run)
    n = len(labels)
    # Hover text per cell; the upper triangle is masked (None) so causality shows as empty space.
    masked = np.where(np.tril(np.ones_like(matrix, dtype=bool)), matrix, np.nan)
    hover = [[f"query {q}: {labels[q]}<br>key {k}: {labels[k]}<br>weight {matrix[q, k]:.4f}" if k <= q else ""
              for k in range(n)] for q in range(n)]
    figure = go.Figure(go.Heatmap(z=masked, x=list(range(n)), y=list(range(n)), text=hover, hoverinfo="text",
                                  colorscale="Blues", zmin=0, zmax=float(np.nanmax(masked)) or 1.0, colorbar={"title": "weight"}))
    step = max(1, -(-n * 14 // 560))  # labels at least 14 px apart on the 560 px plot; hover names every token
    ticks = list(range(0, n, step))
    figure.update_xaxes(tickvals=ticks, ticktext=[labels[i] for i in ticks], tickangle=-60, title="key (attended to)", side="bottom")
    figure.update_yaxes(tickvals=ticks, ticktext=[labels[i] for i in ticks], autorange="reversed", title="query (attending)")
    if query is not None and 0 <= query < n:
        figure.add_shape(type="rect", x0=-0.5, x1=query + 0.5, y0=query - 0.5, y1=query + 0.5, line={"color": "#dc2626", "width": 2})
    what = "mean over heads" if head is None else f"head {head}"
    figure.update_layout(title=f"Layer {layer}, {what} · {escape(run.computed_by)}", height=640, margin={"l": 80, "r": 20, "t": 50, "b": 80})
    return figure


def row_figure(run: RunAttention | None, layer: int, head: int | None, query: int | None):
    """What one query token attended to, as bars over its keys (a hint when no token is picked)."""
    import plotly.graph_objects as go

    if run is None or query is None:
        figure = go.Figure()
        figure.update_layout(height=140, margin={"l": 20, "r": 20, "t": 40, "b": 20}, xaxis_visible=False, yaxis_visible=False,
                             title="Pick a token under “Highlight a token's row” to see what it attended to")
        return figure
    labels = _tick_labels(run)
    row = run.matrix(layer, head)[query, : query + 1]
    figure = go.Figure(go.Bar(x=list(range(query + 1)), y=row, text=[labels[k] for k in range(query + 1)],
                              hovertemplate="key %{x}: %{text}<br>weight %{y:.4f}<extra></extra>", marker_color="#2563eb"))
    figure.update_layout(title=f"Token {query} ({labels[query]}) attends to…", height=260, margin={"l": 50, "r": 20, "t": 40, "b": 40},
                         xaxis_title="key position", yaxis_title="weight")
    return figure


def static_heatmap(run: RunAttention, layer: int, head: int | None, path: Path) -> Path:
    """The current heatmap as a file for papers: PNG or SVG by the suffix of `path` (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # SVG keeps labels as editable text (svg.fonttype none), which papers and editors want.
    plt.rcParams["svg.fonttype"] = "none"
    cjk_font_notice(run.labels)  # CJK labels need a CJK font (a warning is returned when there is none)
    matrix = np.where(np.tril(np.ones((len(run.labels),) * 2, dtype=bool)), run.matrix(layer, head), np.nan)
    size = min(14, 4 + len(run.labels) * 0.12)
    fig, ax = plt.subplots(figsize=(size, size), dpi=150)
    image = ax.imshow(matrix, cmap="Blues", vmin=0)
    if len(run.labels) <= 64:  # readable labels only; beyond that the axes carry positions
        ticks = range(len(run.labels))
        plain = [visible_label(t) for t in run.labels]
        ax.set_xticks(list(ticks), plain, rotation=90, fontsize=7)
        ax.set_yticks(list(ticks), plain, fontsize=7)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(f"Layer {layer}, {'mean over heads' if head is None else f'head {head}'}")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def small_multiples(run: RunAttention, layer: int, path: Path, title: str | None = None, head_title: str = "head {head}") -> Path:
    """All heads of a layer side by side (PNG): quick to draw and to look at even at 256 tokens. `title` and
    `head_title` (a template of {head}) are the figure's words, English unless the caller gives others."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = run.n_heads
    cols = min(6, heads)
    rows = -(-heads // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.3 * rows + 0.4), dpi=110, squeeze=False)
    mask = np.tril(np.ones((len(run.labels),) * 2, dtype=bool))
    for h, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if h < heads:
            ax.imshow(np.where(mask, run.weights[layer, h], np.nan), cmap="Blues", vmin=0)
            ax.set_title(head_title.format(head=h), fontsize=9)
        else:
            ax.axis("off")
    fig.suptitle(title or f"Layer {layer}: all {heads} heads (query down, key across)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
