"""The Benchmark tab: the benchmark engine on the loaded model, as a table, bar charts and downloads."""

from __future__ import annotations

import csv
import json
import tempfile
from html import escape
from pathlib import Path

import gradio as gr

from ..bench.engine import (BenchConfig, PeerPythons, add_speedups, available_cells, markdown_table, run_all_peers,
                            run_benchmark)
from ..errors import PlaygroundError
from ..locales import error_text
from ..machine import machine_description
from ..service import Playground
from .i18n import lang_of, localize_on_load, t, translated, ui_error

TABLE_COLUMNS = ["backend", "variant", "provider", "prompt_tokens", "new_tokens", "batch", "ttft_ms", "decode_tokens_per_s",
                 "per_sequence_tokens_per_s", "speedup_vs_batch_1", "speedup_vs_torch_fp32", "latency_p50_ms", "latency_p90_ms",
                 "eval_tokens_per_s", "peak_rss_mb", "size_mb", "top1_agreement"]
BATCH_SIZES = (1, 4, 8, 16)
COLOURS = {"torch": "#6b7280", "llama.cpp": "#d97706", "CTranslate2": "#059669", "OpenVINO": "#7c3aed"}  # ONNX: blue
PEER_MISSING_KEYS = {"llama.cpp": "bench.peer_missing", "CTranslate2": "bench.ct2_missing", "OpenVINO": "bench.openvino_missing"}


def table_headers(lang: str) -> list[str]:
    """The table's column headers in `lang`; the English ones are the CSV's column names."""
    return [t(f"bench.col.{column}", lang) for column in TABLE_COLUMNS]


def _label(row: dict) -> str:
    batch = f" ×{row['batch']}" if row.get("batch", 1) != 1 else ""
    return f"{row['backend']} {row['variant']} ({row['device']}) · {row['prompt_tokens']}+{row['new_tokens']}{batch}"


def batch_figure(rows: list[dict], title: str, x_title: str, unit: str):
    """Aggregate decode tokens/s against batch size, one line per cell and size."""
    import plotly.graph_objects as go

    figure = go.Figure()
    lines: dict[str, list[dict]] = {}
    for r in rows:
        lines.setdefault(f"{r['backend']} {r['variant']} ({r['device']}) · {r['prompt_tokens']}+{r['new_tokens']}", []).append(r)
    for name, points in lines.items():
        points.sort(key=lambda r: r.get("batch", 1))
        figure.add_trace(go.Scatter(x=[r.get("batch", 1) for r in points], y=[r["decode_tokens_per_s"] for r in points],
                                    mode="lines+markers", name=escape(name, quote=False),
                                    text=[f"{r['speedup_vs_batch_1']:.2f}×" if r.get("speedup_vs_batch_1") else "" for r in points],
                                    hovertemplate="batch %{x}: %{y:.1f} " + unit + " (%{text} vs batch 1)<extra></extra>"))
    figure.update_layout(title=title, height=340, margin={"l": 50, "r": 20, "t": 50, "b": 50}, xaxis_title=x_title,
                         yaxis_title=unit, xaxis_type="log", legend={"orientation": "h"})
    return figure


def bars_figure(rows: list[dict], key: str, title: str, unit: str):
    import plotly.graph_objects as go

    labels = [escape(_label(r), quote=False) for r in rows]
    text = [f"{r[key]:.1f} {unit}" + (f" · {r['speedup_vs_torch_fp32']:.2f}×" if key == "decode_tokens_per_s" and r.get("speedup_vs_torch_fp32") else "")
            for r in rows]
    figure = go.Figure(go.Bar(x=labels, y=[r[key] for r in rows], text=text, textposition="outside",
                              marker_color=[COLOURS.get(r["backend"], "#2563eb") for r in rows]))
    figure.update_layout(title=title, height=340, margin={"l": 50, "r": 20, "t": 50, "b": 110}, yaxis_title=unit,
                         yaxis_range=[0, max((r[key] for r in rows), default=1) * 1.25])  # room for the labels
    return figure


def bars_png(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.5), dpi=130)
    labels = [_label(r).replace(" · ", "\n") for r in rows]
    colours = [COLOURS.get(r["backend"], "#2563eb") for r in rows]
    for ax, key, title in ((axes[0], "decode_tokens_per_s", "decode tokens/s"), (axes[1], "ttft_ms", "time to first token (ms)")):
        bars = ax.bar(range(len(rows)), [r[key] for r in rows], color=colours)
        ax.set_xticks(range(len(rows)), labels, fontsize=7, rotation=30, ha="right")
        ax.set_title(title)
        if key == "decode_tokens_per_s":
            ax.bar_label(bars, [f"{r['speedup_vs_torch_fp32']:.2f}×" if r.get("speedup_vs_torch_fp32") else "" for r in rows], fontsize=8)
    lines: dict[str, list[dict]] = {}
    for r in rows:
        lines.setdefault(f"{r['backend']} {r['variant']} ({r['device']})", []).append(r)
    for name, points in lines.items():
        points.sort(key=lambda r: r.get("batch", 1))
        axes[2].plot([r.get("batch", 1) for r in points], [r["decode_tokens_per_s"] for r in points], marker="o", label=name)
    axes[2].set_xscale("log", base=2)
    axes[2].set_xlabel("batch size")
    axes[2].set_title("aggregate decode tokens/s by batch size")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_downloads(rows: list[dict], machine: dict) -> list[str]:
    folder = Path(tempfile.mkdtemp(prefix="gpt2-playground-bench-"))
    (folder / "bench.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    with open(folder / "bench.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (folder / "bench.md").write_text(markdown_table(rows) + "\n")
    return [str(folder / name) for name in ("bench.csv", "bench.json", "bench.md")] + [str(bars_png(rows, folder / "bench.png"))]


def input_problems(chosen_labels, prompt_n, new_n, context: int, lang: str) -> dict[str, str]:
    """What keeps the inputs from running, by input ("cells", "prompt", "new"), said in `lang`; empty when they can run.

    The number boxes carry no minimum of Gradio's own: its range check answers in English only ("Value 1 is less
    than minimum value 2") with an error on every pane; these messages show at the box itself (see `validate`).
    """
    problems = {}
    if not chosen_labels:
        problems["cells"] = t("bench.choose_cell", lang)
    prompt_ok = isinstance(prompt_n, (int, float)) and 1 <= prompt_n <= context - 2
    if not prompt_ok:
        problems["prompt"] = t("bench.prompt_range", lang, most=context - 2, context=context)
    most_new = context - int(prompt_n) if prompt_ok else context - 1
    if not (isinstance(new_n, (int, float)) and 2 <= new_n <= most_new):
        problems["new"] = t("bench.new_range", lang, most=most_new, context=context)
    return problems


def build_bench_tab(playground: Playground) -> None:
    cells = {c.label: c for c in available_cells()}
    context = playground.backend().info.context_length
    intro = gr.Markdown(t("bench.intro", "en", model=escape(playground.source.name)))
    with gr.Row():
        chosen = gr.CheckboxGroup(list(cells), value=list(cells), label=translated("bench.cells"), scale=3, elem_id="bench-cells")
        # No minimum= here: see input_problems.
        prompt_tokens = gr.Number(value=min(32, context // 4), precision=0, label=translated("bench.prompt_tokens"), scale=1, elem_id="bench-prompt")
        new_tokens = gr.Number(value=min(128, context // 2), precision=0, label=translated("bench.new_tokens"), scale=1, elem_id="bench-new")
        repeats = gr.Slider(1, 7, value=3, step=1, label=translated("bench.repeats"), scale=1)
        batch_sizes = gr.CheckboxGroup(list(BATCH_SIZES), value=[1], label=translated("bench.batch_sizes"), scale=1,
                                       elem_id="bench-batch")
        peer = gr.Checkbox(value=True, label=translated("bench.peer"), scale=1, elem_id="bench-peer")
        run_btn = gr.Button(translated("bench.run"), variant="primary", scale=0, elem_id="bench-run")
    status = gr.Markdown(elem_id="bench-status")
    table = gr.Dataframe(headers=TABLE_COLUMNS, value=[], interactive=False, elem_id="bench-table")
    with gr.Row():
        speed_plot = gr.Plot(elem_id="bench-speed")
        ttft_plot = gr.Plot(elem_id="bench-ttft")
    batch_plot = gr.Plot(elem_id="bench-batch-plot")
    files = gr.File(label=translated("bench.files"), file_count="multiple", interactive=False, elem_id="bench-files")
    localize_on_load([intro, table], lambda lang: (t("bench.intro", lang, model=escape(playground.source.name)),
                                                   {"headers": table_headers(lang), "data": []}))

    def validate(chosen_labels, prompt_n, new_n, repeats_n, batches, with_peer, request: gr.Request):
        """Gradio's check before the run: a bad input gets its message at the box, in the browser's language, and
        nothing runs (no error on the result panes, no traceback in the log)."""
        problems = input_problems(chosen_labels, prompt_n, new_n, context, lang_of(request))
        return [gr.validate(name not in problems, problems.get(name, ""))
                for name in ("cells", "prompt", "new", "repeats", "batch_sizes", "peer")]

    def run(chosen_labels, prompt_n, new_n, repeats_n, batches, with_peer, request: gr.Request, progress=gr.Progress()):
        lang = lang_of(request)
        problems = input_problems(chosen_labels, prompt_n, new_n, context, lang)
        if problems:  # `validate` has said so already; a caller that skipped it gets the first problem
            raise gr.Error(next(iter(problems.values())), print_exception=False)
        prompt_n, new_n = int(prompt_n), int(new_n)
        config = BenchConfig([prompt_n], [new_n], int(repeats_n), batch_sizes=sorted(int(b) for b in batches or [1]))
        # Progress in the browser's language, one step per measured row (the engine's own tqdm bar is English).
        done, total = 0, len(chosen_labels) * len(config.batch_sizes)

        def measured(row):
            nonlocal done
            done += 1
            progress((done, total), desc=t("bench.progress", lang), unit=t("bench.progress_unit", lang))

        progress((0, total), desc=t("bench.progress", lang), unit=t("bench.progress_unit", lang))
        try:
            rows = run_benchmark(playground.source, [cells[label] for label in chosen_labels], config,
                                 exports_root=playground.exports_root, on_row=measured, progress=False)
            peer_missing, peer_failed = {}, []
            if with_peer:  # the peers where PLAYGROUND_LLAMA_PYTHON / _LLAMA_SRC, _CT2_PYTHON, _OPENVINO_PYTHON point
                peer_rows, peer_missing, peer_failed = run_all_peers(playground.source, config, PeerPythons.from_env(),
                                                                     playground.exports_root)
                rows += peer_rows
                add_speedups(rows)
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        machine = machine_description()
        if playground.history is not None:
            playground.history.save_bench(rows, playground.source.name, machine, owner=request.username or "")
        cpu, gpu = escape(machine["cpu"]), escape(machine["gpu"] or "")
        where = (t("bench.machine_gpu", lang, cpu=cpu, cores=machine["cores"], gpu=gpu) if gpu
                 else t("bench.machine", lang, cpu=cpu, cores=machine["cores"]))
        note = t("bench.note", lang, cells=len(rows), machine=where, threads=config.threads, repeats=config.repeats)
        if not rows[0]["quality_meaningful"]:
            note += " " + t("bench.random_weights", lang)
        for name in peer_missing:
            note += "\n\n" + t(PEER_MISSING_KEYS[name], lang)
        for name, variant, exc in peer_failed:
            note += "\n\n" + t("bench.peer_failed", lang, peer=name, variant=variant, error=escape(error_text(exc, lang)))
        return (note, {"headers": table_headers(lang), "data": [[r.get(c) for c in TABLE_COLUMNS] for r in rows]},
                bars_figure(rows, "decode_tokens_per_s", t("bench.speed_title", lang), t("bench.tokens_per_s", lang)),
                bars_figure(rows, "ttft_ms", t("bench.ttft_title", lang), "ms"), write_downloads(rows, machine),
                batch_figure(rows, t("bench.batch_title", lang), t("bench.batch_axis", lang), t("bench.tokens_per_s", lang)))

    run_btn.click(run, inputs=[chosen, prompt_tokens, new_tokens, repeats, batch_sizes, peer],
                  outputs=[status, table, speed_plot, ttft_plot, files, batch_plot], validator=validate,
                  api_visibility="private", concurrency_id="bench", concurrency_limit=1)
