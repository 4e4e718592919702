"""The Benchmark tab: the benchmark engine on the loaded model, as a table, bar charts and downloads."""

from __future__ import annotations

import csv
import json
import tempfile
from html import escape
from pathlib import Path

import gradio as gr

from ..bench import BenchConfig, available_cells, machine_description, markdown_table, run_benchmark
from ..errors import PlaygroundError
from ..service import Playground

TABLE_COLUMNS = ["backend", "variant", "provider", "prompt_tokens", "new_tokens", "ttft_ms", "decode_tokens_per_s",
                 "speedup_vs_torch_fp32", "latency_p50_ms", "latency_p90_ms", "peak_rss_mb", "size_mb", "top1_agreement"]


def _label(row: dict) -> str:
    return f"{row['backend']} {row['variant']} ({row['device']}) · {row['prompt_tokens']}+{row['new_tokens']}"


def bars_figure(rows: list[dict], key: str, title: str, unit: str):
    import plotly.graph_objects as go

    labels = [escape(_label(r), quote=False) for r in rows]
    text = [f"{r[key]:.1f} {unit}" + (f" · {r['speedup_vs_torch_fp32']:.2f}×" if key == "decode_tokens_per_s" and r.get("speedup_vs_torch_fp32") else "")
            for r in rows]
    figure = go.Figure(go.Bar(x=labels, y=[r[key] for r in rows], text=text, textposition="outside",
                              marker_color=["#6b7280" if r["backend"] == "torch" else "#2563eb" for r in rows]))
    figure.update_layout(title=title, height=340, margin={"l": 50, "r": 20, "t": 50, "b": 110}, yaxis_title=unit,
                         yaxis_range=[0, max((r[key] for r in rows), default=1) * 1.25])  # room for the labels
    return figure


def bars_png(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), dpi=130)
    labels = [_label(r).replace(" · ", "\n") for r in rows]
    colours = ["#6b7280" if r["backend"] == "torch" else "#2563eb" for r in rows]
    for ax, key, title in ((axes[0], "decode_tokens_per_s", "decode tokens/s"), (axes[1], "ttft_ms", "time to first token (ms)")):
        bars = ax.bar(range(len(rows)), [r[key] for r in rows], color=colours)
        ax.set_xticks(range(len(rows)), labels, fontsize=7, rotation=30, ha="right")
        ax.set_title(title)
        if key == "decode_tokens_per_s":
            ax.bar_label(bars, [f"{r['speedup_vs_torch_fp32']:.2f}×" if r.get("speedup_vs_torch_fp32") else "" for r in rows], fontsize=8)
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


def build_bench_tab(playground: Playground) -> None:
    cells = {c.label: c for c in available_cells()}
    context = playground.backend().info.context_length
    gr.Markdown(f"Times the playground's own decoding loop on **{escape(playground.source.name)}**: greedy, a fixed number of "
                "new tokens, warm-up then repeats, one thread setting for every cell. Quality is measured against PyTorch "
                "fp32 on a fixed text. Results are also stored in the history database (`bench` table).")
    with gr.Row():
        chosen = gr.CheckboxGroup(list(cells), value=list(cells), label="Cells (what this machine can run)", scale=3, elem_id="bench-cells")
        prompt_tokens = gr.Number(value=min(32, context // 4), precision=0, minimum=1, label="Prompt tokens", scale=1, elem_id="bench-prompt")
        new_tokens = gr.Number(value=min(128, context // 2), precision=0, minimum=2, label="New tokens", scale=1, elem_id="bench-new")
        repeats = gr.Slider(1, 7, value=3, step=1, label="Repeats", scale=1)
        run_btn = gr.Button("Run benchmark", variant="primary", scale=0, elem_id="bench-run")
    status = gr.Markdown(elem_id="bench-status")
    table = gr.Dataframe(headers=TABLE_COLUMNS, value=[], interactive=False, elem_id="bench-table")
    with gr.Row():
        speed_plot = gr.Plot(elem_id="bench-speed")
        ttft_plot = gr.Plot(elem_id="bench-ttft")
    files = gr.File(label="Download (CSV, JSON, Markdown, PNG)", file_count="multiple", interactive=False, elem_id="bench-files")

    def run(chosen_labels, prompt_n, new_n, repeats_n, progress=gr.Progress(track_tqdm=True)):
        if not chosen_labels:
            raise gr.Error("Choose at least one cell.")
        prompt_n, new_n = int(prompt_n or 0), int(new_n or 0)
        if prompt_n < 1 or new_n < 2 or prompt_n + new_n > context:
            raise gr.Error(f"Prompt tokens (≥ 1) + new tokens (≥ 2) must fit the model's context of {context}.")
        config = BenchConfig([prompt_n], [new_n], int(repeats_n))
        try:
            rows = run_benchmark(playground.source, [cells[label] for label in chosen_labels], config,
                                 exports_root=playground.exports_root)
        except PlaygroundError as exc:
            raise gr.Error(str(exc)) from None
        machine = machine_description()
        if playground.history is not None:
            playground.history.save_bench(rows, playground.source.name, machine)
        note = (f"{len(rows)} cells on {escape(machine['cpu'])} ({machine['cores']} cores"
                f"{', ' + escape(machine['gpu']) if machine['gpu'] else ''}), {config.threads} threads, {config.repeats} repeats.")
        if not rows[0]["quality_meaningful"]:
            note += " Random weights: quality columns are not meaningful."
        return (note, [[r.get(c) for c in TABLE_COLUMNS] for r in rows],
                bars_figure(rows, "decode_tokens_per_s", "Decode speed (speed-up vs PyTorch fp32 on the bars)", "tokens/s"),
                bars_figure(rows, "ttft_ms", "Time to first token", "ms"), write_downloads(rows, machine))

    run_btn.click(run, inputs=[chosen, prompt_tokens, new_tokens, repeats], outputs=[status, table, speed_plot, ttft_plot, files],
                  api_visibility="private", concurrency_id="bench", concurrency_limit=1)
