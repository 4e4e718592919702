"""The Evaluate tab and the `/evaluate` API: score models, backends and variants on a text (pasted, uploaded or a built-in
held-out set) as one table and one plot, saved to the history, with the saved evaluations listed per user."""

from __future__ import annotations

from html import escape

import gradio as gr

from ..bench.engine import available_cells
from ..errors import PlaygroundError
from ..evaluate.texts import PASTED
from ..evaluate import Evaluation, EvaluationText, builtin_text, evaluate_all, from_pasted, from_upload, plan_all, targets_of
from ..evaluate.figures import bits_per_byte_figure
from ..evaluate.harness import available_tasks, resolve_tasks, task_cell, task_columns
from ..evaluate.run import Target
from ..finetune.data import FORMATS
from ..machine import machine_description
from ..service import Playground
from .finetune_tab import read_upload
from .i18n import EN, lang_of, localize_on_load, t, translated, ui_error

SOURCES = ("paste", "upload", "en", "zh")  # pasted text, an uploaded file, builtin:en, builtin:zh
RESULT_COLUMNS = ("model", "backend", "variant", "perplexity", "bits_per_byte", "kl_to_fp32", "tokens", "window", "stride",
                  "bytes", "seconds", "tokens_per_s")
SAVED_COLUMNS = ("id", "created_utc", "model", "backend", "variant", "data_name", "perplexity", "bits_per_byte", "kl_to_fp32",
                 "tokens", "window", "stride")
SAVED_SHOWN = 50
# Evaluations wait for each other, in a queue of their own: one is already hundreds of forward passes on every core, and
# sharing /generate's concurrency id would cap the runs decoding at once (Gradio keeps the lowest limit an id is given).
EVALUATIONS_AT_ONCE = 1


def cell_choices() -> list[str]:
    """"torch", "onnx fp32", "onnx int8", ...: what this machine can run (bench.engine.available_cells), each once."""
    return list(dict.fromkeys("torch" if c.backend == "torch" else f"{c.backend} {c.variant}" for c in available_cells()))


def targets_of_choices(models: list[str] | None, cells: list[str] | None) -> list[Target]:
    """The chosen models on the chosen cells ("torch", "onnx int8"), in the order shown."""
    return [Target(model, *cell.split(" ", 1)) if " " in cell else Target(model, cell)
            for model in models or [] for cell in cells or []]


def source_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(f"evaluate.source_{source}", lang), source) for source in SOURCES]


def chosen_text(source: str, pasted: str | None, upload, column: str | None) -> EvaluationText:
    """The text the form points to: the pasted text, the uploaded file (the fine-tune tab's `UploadedData`) or a
    built-in held-out set."""
    if source in ("en", "zh"):
        return builtin_text(source)
    if source == "upload" and upload is not None:
        return from_upload(upload.name, upload.raw, column or None)
    if source == "paste" and pasted:
        return from_pasted(pasted)
    raise PlaygroundError(key="evaluate.no_text", field="data")


def _number(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def metric_name(metric: str, lang: str) -> str:
    """acc -> accuracy / 准确率; a metric the locale files do not name keeps lm-eval's name."""
    return t(f"evaluate.metric.{metric}", lang) if f"evaluate.metric.{metric}" in EN else metric


def table_html(rows: list[dict], columns: tuple[str, ...], lang: str, elem_class: str) -> str:
    """A plain table of `rows` (escaped; numbers to 4 significant digits), then a column per lm-eval task and metric
    of their `tasks` (accuracy ± standard error): a gr.Dataframe of many rows is slow to show in Gradio 6.17 (see
    history_tab.py)."""
    extra = task_columns([row.get("tasks") for row in rows])
    head = "".join(f"<th>{escape(t(f'evaluate.col.{c}', lang))}</th>" for c in columns) + "".join(
        f"<th class='eval-task-col'>{escape(t('evaluate.col.task', lang, task=task, metric=metric_name(metric, lang)))}</th>"
        for task, metric in extra)
    body = "".join("<tr>" + "".join(f"<td>{escape(_number(row.get(c)))}</td>" for c in columns) + "".join(
        f"<td>{escape(task_cell(row.get('tasks'), task, metric) or '—')}</td>" for task, metric in extra) + "</tr>"
        for row in rows)
    return (f"<div class='{elem_class}' style='overflow-x:auto'><table style='width:100%;border-collapse:collapse;font-size:90%'>"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def shown_name(name: str, lang: str) -> str:
    """A text's name as the page shows it: pasted text in the page's language (it is saved as "pasted text")."""
    return t("evaluate.source_paste", lang) if name == PASTED else name


def summary_markdown(evaluations: list[Evaluation], text: EvaluationText, saved: bool, lang: str) -> str:
    machine = machine_description()
    where = t("evaluate.machine", lang, cpu=escape(machine["cpu"]), cores=machine["cores"])
    if machine["gpu"]:
        where += f" + {escape(machine['gpu'])}"
    return (t("evaluate.summary", lang, count=len(evaluations), name=escape(shown_name(text.name, lang)), bytes=f"{text.bytes:,}", sha=text.sha256[:12],
              machine=where) + " " + t("evaluate.saved_note" if saved else "evaluate.not_saved", lang))


def figure(evaluations: list[Evaluation], lang: str):
    return bits_per_byte_figure(evaluations, t("evaluate.plot_title", lang), t("evaluate.plot_y", lang), t("evaluate.plot_hover", lang))


def build_evaluate_tab(playground: Playground) -> dict:
    """Lay out the tab inside a gr.Tab, wire it, and register `/evaluate`. Returns its main components by name."""
    gr.Markdown(translated("evaluate.intro"))
    upload_state = gr.State(None, time_to_live=3600)  # an UploadedData, as on the Fine-tune tab
    cells = cell_choices()
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=320):
            models = gr.Dropdown(playground.model_choices(), value=[playground.source.name], multiselect=True,
                                 allow_custom_value=True, label=translated("evaluate.models"), info=translated("evaluate.models_info"),
                                 elem_id="eval-models")
            chosen_cells = gr.CheckboxGroup(cells, value=cells[:1], label=translated("evaluate.cells"),
                                            info=translated("evaluate.cells_info"), elem_id="eval-cells")
            tasks = gr.CheckboxGroup(list(available_tasks()), value=[], label=translated("evaluate.tasks"),
                                     info=translated("evaluate.tasks_info"), elem_id="eval-tasks")
            with gr.Row():
                window = gr.Number(0, precision=0, label=translated("evaluate.window"), elem_id="eval-window")
                stride = gr.Number(0, precision=0, label=translated("evaluate.stride"), elem_id="eval-stride")
        with gr.Column(scale=3, min_width=320):
            source = gr.Radio(source_choices("en"), value="paste", label=translated("evaluate.source"), elem_id="eval-source")
            pasted = gr.Textbox(label=translated("evaluate.paste"), info=translated("evaluate.paste_info"), lines=5, max_lines=12,
                                elem_id="eval-text")
            with gr.Row(equal_height=False):
                upload = gr.File(label=translated("evaluate.upload"), file_types=list(FORMATS), file_count="single",
                                 type="filepath", height=110, elem_id="eval-upload")
                column = gr.Dropdown([], label=translated("evaluate.column"), visible=False, elem_id="eval-column")
    run_btn = gr.Button(translated("evaluate.run"), variant="primary", scale=0, min_width=180, elem_id="eval-run")
    status = gr.Markdown(elem_id="eval-status")
    table = gr.HTML(elem_id="eval-table")
    plot = gr.Plot(elem_id="eval-plot")
    with gr.Accordion(translated("evaluate.saved"), open=True):
        refresh_btn = gr.Button(translated("evaluate.refresh"), size="sm", scale=0, elem_id="eval-refresh")
        saved = gr.HTML(elem_id="eval-saved")

    def saved_html(lang: str, username: str | None) -> str:
        if playground.history is None:
            return escape(t("evaluate.not_saved", lang))
        # Times to the second, as History shows runs.
        rows = [row | {"created_utc": row["created_utc"][:19].replace("T", " "), "data_name": shown_name(row["data_name"], lang)}
                for row in playground.history.evaluations(SAVED_SHOWN, owner=playground.viewer(username))]
        return table_html(rows, SAVED_COLUMNS, lang, "eval-saved-table")

    # The tasks folder is read again at each page load: a task folder put there shows without a restart.
    localize_on_load([source, saved, tasks], lambda lang, request: (gr.update(choices=source_choices(lang)),
                                                                     saved_html(lang, request.username),
                                                                     gr.update(choices=list(available_tasks()))),
                     with_request=True)

    def plans_of(form: dict):
        """The form's evaluations, each checked (plan_all), and its text. A window or stride of 0 (a number box is never
        empty) is the default."""
        text = chosen_text(form[source], form[pasted], form[upload_state], form[column])
        targets = targets_of_choices(form[models], form[chosen_cells])
        chosen_tasks = resolve_tasks(form[tasks] or [], folders=False)
        return plan_all(playground, targets, text, form[window] or None, form[stride] or None, chosen_tasks), text

    def check(form: dict, request: gr.Request):
        """Every check before the run, apart from it: a refusal is a notice only, not an error drawn on every result pane."""
        try:
            plans_of(form)
        except PlaygroundError as exc:
            raise ui_error(exc, request) from None

    def run(form: dict, request: gr.Request, progress=gr.Progress(track_tqdm=True)):  # tqdm: a first ONNX export's stages
        lang = lang_of(request)

        def advance(done: int, total: int, plan) -> None:
            target = f"{plan.model} · {plan.target.backend} {plan.target.variant or ''}".strip()
            progress((done, total), desc=t("evaluate.progress", lang, target=target), unit=t("evaluate.progress_unit", lang))

        try:
            plans, text = plans_of(form)
            evaluations = evaluate_all(plans, text, playground.history, owner=request.username or "", on_progress=advance)
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        return (summary_markdown(evaluations, text, playground.history is not None, lang),
                table_html([e.to_dict() for e in evaluations], RESULT_COLUMNS, lang, "eval-result-table"), figure(evaluations, lang),
                saved_html(lang, request.username))

    def on_upload(path, request: gr.Request):
        if not path:
            return None, gr.update(choices=[], value=None, visible=False), gr.skip()
        try:
            uploaded = read_upload(path)  # the Fine-tune tab's checks; the file is deleted whatever happens
        except PlaygroundError as exc:
            raise ui_error(exc, request) from None
        if uploaded.columns is None:
            return uploaded, gr.update(choices=[], value=None, visible=False), "upload"
        chosen = "text" if "text" in uploaded.columns else uploaded.columns[0]
        return uploaded, gr.update(choices=list(uploaded.columns), value=chosen, visible=True), "upload"

    form = {models, chosen_cells, tasks, window, stride, source, pasted, upload_state, column}  # a set: each function gets a dict
    run_btn.click(check, inputs=form, outputs=None, api_visibility="private", concurrency_limit=None).success(
        run, inputs=form, outputs=[status, table, plot, saved], api_visibility="private", concurrency_id="evaluate",
        concurrency_limit=EVALUATIONS_AT_ONCE)
    upload.upload(on_upload, inputs=[upload], outputs=[upload_state, column, source], api_visibility="private")
    upload.clear(lambda: (None, gr.update(choices=[], value=None, visible=False)), outputs=[upload_state, column], queue=False,
                 api_visibility="private")

    def refresh(request: gr.Request) -> str:
        return saved_html(lang_of(request), request.username)

    refresh_btn.click(refresh, outputs=[saved], queue=False, api_visibility="private")
    models.focus(lambda: gr.update(choices=playground.model_choices()), outputs=[models], queue=False, api_visibility="private")

    def evaluate(text: str = "", builtin: str = "", models: list[str] | None = None, backends: list[str] | None = None,
                 variants: list[str] | None = None, window: int | None = None, stride: int | None = None,
                 tasks: list[str] | None = None, request: gr.Request = None) -> dict:
        """Score models on a text: `text`, or `builtin` ("en" or "zh", the demo corpora's held-out sets). Every model
        of `models` (default: the app's) runs on every backend of `backends` (torch, onnx; default torch), ONNX in
        every variant of `variants` (default fp32). `window` (default: the model's context) and `stride` (default:
        half a window) in tokens. `tasks`: lm-evaluation-harness tasks run on each too (python_mc_en, common_mc_zh, a
        folder of the app's tasks folder, or one of lm-eval's own when the hub is reachable). Returns
        {"evaluations": [...]}, one per model, backend and variant: perplexity, bits_per_byte, kl_to_fp32 (quantized
        variants), tokens, window, stride, bytes, seconds, tokens_per_s, the model's and the text's sha256, and `tasks`
        ({task: {"acc", "acc_stderr", "acc_norm", ...}}, None without tasks). Each is saved to the history as the
        caller's."""
        try:
            data = builtin_text(builtin) if builtin else from_pasted(text)
            plans = plan_all(playground, targets_of(models or [None], backends or ["torch"], variants or ["fp32"]), data,
                             window, stride, resolve_tasks(tasks or [], folders=False))
            evaluations = evaluate_all(plans, data, playground.history, owner=(request.username if request else None) or "")
        except PlaygroundError as exc:
            raise gr.Error(str(exc)) from None
        return {"evaluations": [e.to_dict() for e in evaluations]}

    gr.api(evaluate, api_name="evaluate", concurrency_id="evaluate", concurrency_limit=EVALUATIONS_AT_ONCE)
    return {"models": models, "cells": chosen_cells, "tasks": tasks, "source": source, "text": pasted, "run": run_btn,
            "table": table, "saved": saved}
