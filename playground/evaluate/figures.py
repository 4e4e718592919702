"""The figure of an evaluation table: bits per byte of each model, backend and variant (interactive, or a PNG)."""

from __future__ import annotations

from html import escape
from pathlib import Path

from .run import Evaluation

COLOURS = {"torch": "#6b7280"}  # ONNX: blue


def label(evaluation: Evaluation) -> str:
    """`demo-gpt2 · onnx int8`: what one bar is."""
    return f"{evaluation.model} · {evaluation.backend} {evaluation.variant}"


def bar_text(evaluation: Evaluation, perplexity_word: str = "perplexity") -> str:
    """The numbers beside a bar: bits per byte, perplexity, and the KL divergence to fp32 when there is one."""
    text = f"{evaluation.bits_per_byte:.3f} · {perplexity_word} {evaluation.perplexity:.4g}"
    return text + (f" · KL {evaluation.kl_to_fp32:.2g}" if evaluation.kl_to_fp32 is not None else "")


def bits_per_byte_figure(evaluations: list[Evaluation], title: str, axis: str, perplexity_word: str):
    """A horizontal bar per evaluation (plotly), its numbers beside it; labels escaped (model names come from users)."""
    import plotly.graph_objects as go

    figure = go.Figure(go.Bar(
        y=[escape(label(e), quote=False) for e in evaluations], x=[e.bits_per_byte for e in evaluations], orientation="h",
        text=[escape(bar_text(e, perplexity_word), quote=False) for e in evaluations], textposition="outside",
        marker_color=[COLOURS.get(e.backend, "#2563eb") for e in evaluations], hoverinfo="text+y"))
    most = max((e.bits_per_byte for e in evaluations), default=1.0)
    figure.update_layout(title=title, height=120 + 40 * len(evaluations), margin={"l": 20, "r": 20, "t": 50, "b": 40},
                         xaxis_title=axis, xaxis_range=[0, most * 1.6], yaxis={"autorange": "reversed"})  # room for the text
    return figure


def bits_per_byte_png(evaluations: list[Evaluation], path: Path | str, title: str) -> Path:
    """The same bars as a PNG (matplotlib; a CJK font for Chinese model names when one is installed); with lm-eval task
    results, a second panel beside them: each task's accuracy per evaluation, with its standard error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..figures import cjk_family

    cjk_family()
    tasks = list(dict.fromkeys(task for e in evaluations for task in (e.tasks or {})))
    height = 1.2 + 0.45 * len(evaluations)
    if tasks:
        fig, (ax, task_ax) = plt.subplots(1, 2, figsize=(15, max(height, 1.6 + 0.3 * len(tasks) * len(evaluations))), dpi=130,
                                          gridspec_kw={"width_ratios": [3, 2]})
        accuracy_panel(task_ax, evaluations, tasks)
    else:
        fig, ax = plt.subplots(figsize=(9, height), dpi=130)
    rows = list(range(len(evaluations)))[::-1]  # the first evaluation on top, as in the table
    bars = ax.barh(rows, [e.bits_per_byte for e in evaluations], color=[COLOURS.get(e.backend, "#2563eb") for e in evaluations])
    ax.bar_label(bars, [bar_text(e) for e in evaluations], padding=4, fontsize=8)
    ax.set_yticks(rows, [label(e) for e in evaluations], fontsize=8)
    ax.set_xlim(0, max(e.bits_per_byte for e in evaluations) * 1.6)
    ax.set_xlabel("bits per byte (lower is better)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def accuracy_panel(ax, evaluations: list[Evaluation], tasks: list[str]) -> None:
    """A group of horizontal bars per task, one bar per evaluation (in the table's order, top down): its accuracy, with
    lm-eval's standard error as the error bar."""
    import matplotlib

    colours = matplotlib.colormaps["tab10"]
    height = 0.8 / len(evaluations)
    for i, e in enumerate(evaluations):
        numbers = [(e.tasks or {}).get(task, {}) for task in tasks]
        rows = [len(tasks) - 1 - t + 0.4 - (i + 0.5) * height for t in range(len(tasks))]  # the first task on top
        ax.barh(rows, [n.get("acc", 0.0) for n in numbers], height, xerr=[n.get("acc_stderr", 0.0) for n in numbers],
                label=label(e), color=colours(i % 10), capsize=2, error_kw={"elinewidth": 0.8})
    ax.set_yticks(range(len(tasks))[::-1], tasks, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy (± standard error, lm-evaluation-harness)")
    ax.legend(fontsize=7, loc="lower right")
