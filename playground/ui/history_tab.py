"""The History tab: recent runs, full-text search, filters, open a run, reuse its settings, delete, export."""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from ..generation import result_from_saved
from ..service import Playground
from .render import stats_markdown, token_view_html

ALL = "(all)"
TABLE_HEADERS = ["id", "time (UTC)", "model", "backend", "prompt", "tokens/s", "status"]
PAGE_SIZE = 200


def table_rows(runs: list[dict]) -> list[list]:
    """Rows for the runs table; cells are plain text (the Dataframe shows them as text, never as markup)."""
    rows = []
    for run in runs:
        tps = (run.get("metrics") or {}).get("decode_tokens_per_s")
        prompt = " ".join((run.get("prompt") or "").split())
        rows.append([
            run["id"],
            run["created_at"][:19].replace("T", " "),
            run.get("model") or "",
            f"{run.get('backend') or ''} {run.get('variant') or ''}".strip(),
            prompt[:80] + ("…" if len(prompt) > 80 else ""),
            round(tps, 1) if tps else None,
            run["status"],
        ])
    return rows


def settings_for_ui(settings: dict) -> dict:
    """Stored settings -> values for the Generate tab's components."""
    values = dict(settings)
    values["stop_sequences"] = "\n".join(s.replace("\n", "\\n") for s in settings.get("stop_sequences") or [])
    values["seed"] = "" if settings.get("seed") is None else str(settings["seed"])
    return values


def build_history_tab(playground: Playground, generate_inputs: dict, tabs: gr.Tabs, tab: gr.Tab, last_result: gr.State,
                      refresh_attention: dict) -> None:
    """Lay out the tab; `generate_inputs` are the Generate tab's components, filled by "Use these settings";
    "Show attention" puts the selected run in `last_result` and opens the Attention tab."""
    store = playground.history
    if store is None:
        gr.Markdown(f"**History is disabled.** {playground.history_disabled}\n\nGeneration works as usual; runs are not saved.",
                    elem_id="history-disabled")
        return

    with gr.Row():
        query = gr.Textbox(label="Search prompts and outputs", placeholder="words to find (taken literally)", scale=4, elem_id="history-search")
        model_filter = gr.Dropdown([ALL], value=ALL, label="Model", scale=1, allow_custom_value=False)
        backend_filter = gr.Dropdown([ALL, "torch", "onnx"], value=ALL, label="Backend", scale=1, elem_id="history-backend")
        refresh = gr.Button("Refresh", scale=0)
    table = gr.Dataframe(headers=TABLE_HEADERS, value=[], interactive=False, wrap=True, max_height=360, elem_id="history-table")
    shown_ids = gr.State([])  # ids of the rows in the table, in order
    selected_id = gr.State(None)

    with gr.Row():
        use_btn = gr.Button("Use these settings", variant="primary", elem_id="history-use", interactive=False)
        attention_btn = gr.Button("Show attention", elem_id="history-attention", interactive=False)
        delete_btn = gr.Button("Delete run…", variant="stop", elem_id="history-delete", interactive=False)
        confirm_btn = gr.Button("Yes, delete it", variant="stop", visible=False, elem_id="history-confirm")
        cancel_btn = gr.Button("Cancel", visible=False)
    with gr.Group():
        run_title = gr.Markdown("Select a run in the table to open it.", elem_id="history-run")
        run_output = gr.Textbox(label="Output", lines=4, max_lines=12, interactive=False, elem_id="history-output")
        run_tokens = gr.HTML(token_view_html(None), elem_id="history-token-view")
        with gr.Row():
            run_settings = gr.JSON(label="Settings")
            run_metrics = gr.JSON(label="Metrics")
    with gr.Accordion("Export", open=False):
        with gr.Row():
            export_format = gr.Radio([("JSON Lines", "jsonl"), ("CSV", "csv")], value="jsonl", label="Format")
            export_scope = gr.Radio([("Runs in the table", "shown"), ("Everything", "all")], value="shown", label="Runs")
            export_btn = gr.Button("Export", scale=0)
        export_file = gr.File(label="Download", interactive=False, elem_id="history-export-file")

    def list_runs(q: str, model: str, backend: str):
        model, backend = (None if model == ALL else model), (None if backend == ALL else backend)
        runs = store.search(q or "", PAGE_SIZE, model, backend)
        models = [ALL, *store.distinct("model")]
        return table_rows(runs), [r["id"] for r in runs], gr.update(choices=models)

    def open_run(ids: list[int], evt: gr.SelectData):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if row is None or row >= len(ids):
            return gr.skip()
        run = store.get(ids[row])
        if run is None:
            gr.Warning(f"Run {ids[row]} no longer exists.")
            return gr.skip()
        result = result_from_saved(run)
        title = f"### Run #{run['id']} · {run['created_at'][:19].replace('T', ' ')} UTC · {run['status']}\n\n{stats_markdown(result)}"
        if run.get("error"):
            title += f"\n\nError: `{run['error']}`"
        return (run["id"], title, run["output"], token_view_html(result), run["settings"], run["metrics"],
                gr.update(interactive=True), gr.update(interactive=True), gr.update(interactive=True))

    def use_settings(run_id: int | None):
        run = store.get(run_id) if run_id is not None else None
        if run is None:
            raise gr.Error("Select a run first.")
        values = settings_for_ui(run["settings"]) | {"prompt": run["prompt"], "model": run["model"], "backend": run["backend"],
                                                      "variant": run["variant"] or "fp32"}
        updates = [gr.update(value=values[name]) if name in values else gr.skip() for name in generate_inputs]
        return [*updates, gr.Tabs(selected="generate")]

    def show_attention(run_id: int | None):
        run = store.get(run_id) if run_id is not None else None
        if run is None:
            raise gr.Error("Select a run first.")
        return result_from_saved(run), gr.Tabs(selected="attention")  # the tab computes it on opening

    def ask_delete():
        return gr.update(visible=False), gr.update(visible=True), gr.update(visible=True)

    def cancel_delete():
        return gr.update(visible=True), gr.update(visible=False), gr.update(visible=False)

    def do_delete(run_id: int | None, q: str, model: str, backend: str):
        if run_id is None or not store.delete(run_id):
            gr.Warning("That run was already deleted.")
        else:
            gr.Info(f"Deleted run #{run_id}.")
        rows, ids, models = list_runs(q, model, backend)
        return (rows, ids, models, None, "Select a run in the table to open it.", "", token_view_html(None), None, None,
                gr.update(visible=True, interactive=False), gr.update(visible=False), gr.update(visible=False),
                gr.update(interactive=False), gr.update(interactive=False))

    def export(fmt: str, scope: str, ids: list[int]):
        out = Path(tempfile.mkdtemp(prefix="gpt2-playground-export-")) / f"history.{fmt}"
        count = store.export(out, fmt, None if scope == "all" else ids)
        gr.Info(f"Exported {count} runs.")
        return str(out)

    filters = [query, model_filter, backend_filter]
    listing = dict(fn=list_runs, inputs=filters, outputs=[table, shown_ids, model_filter], api_visibility="private")
    refresh.click(**listing)
    query.submit(**listing)
    backend_filter.change(**listing)
    model_filter.input(**listing)
    tab.select(**listing)  # opening the tab shows the newest runs
    table.select(open_run, inputs=[shown_ids],
                 outputs=[selected_id, run_title, run_output, run_tokens, run_settings, run_metrics, use_btn, delete_btn, attention_btn],
                 api_visibility="private")
    use_btn.click(use_settings, inputs=[selected_id], outputs=[*generate_inputs.values(), tabs], api_visibility="private")
    attention_btn.click(show_attention, inputs=[selected_id], outputs=[last_result, tabs], api_visibility="private").then(
        **refresh_attention)
    delete_btn.click(ask_delete, outputs=[delete_btn, confirm_btn, cancel_btn], queue=False, api_visibility="private")
    cancel_btn.click(cancel_delete, outputs=[delete_btn, confirm_btn, cancel_btn], queue=False, api_visibility="private")
    confirm_btn.click(do_delete, inputs=[selected_id, *filters],
                      outputs=[table, shown_ids, model_filter, selected_id, run_title, run_output, run_tokens, run_settings,
                               run_metrics, delete_btn, confirm_btn, cancel_btn, use_btn, attention_btn],
                      api_visibility="private")
    export_btn.click(export, inputs=[export_format, export_scope, shown_ids], outputs=[export_file], api_visibility="private")
