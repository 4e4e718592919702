"""The Fine-tune tab: adapt a GPT-2 to pasted or uploaded text, follow the job live, then compare base and result.

The engine is `playground.training` (the same as `python -m playground.finetune`); the job runs on the
service's `FineTuneJobs`, and a timer polls it, so a page reload or a second browser shows the
running job too. An uploaded file is read into memory and deleted at once (see security.py for what
the upload route accepts); only the bytes travel in the session's state.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from html import escape
from pathlib import Path

import gradio as gr

from ..errors import PlaygroundError
from ..service import Playground
from ..finetune.data import FORMATS, csv_columns, read_file
from ..finetune.run import (GPT2_LORA_TARGETS, FineTuneSettings, kept_best_text, plan_finetune,
                            stopped_early_text, test_text)
from .i18n import STOP_EVENT, error_text, info, lang_of, localize_on_load, t, translated, ui_error
from .security import delete_upload

POLL_S = 1.0  # how often every open page asks for the job's progress
# The form's settings, in the order `settings_from_form` takes them (FineTuneSettings' names).
SETTING_NAMES = ("method", "learning_rate", "epochs", "max_steps", "batch_size", "gradient_accumulation", "block_size",
                 "warmup_steps", "weight_decay", "max_grad_norm", "early_stopping_patience", "early_stopping_min_delta",
                 "test_fraction", "seed",
                 "lora_rank", "lora_alpha", "lora_dropout", "lora_target_modules")
PREVIEW_NAME = "data-check"  # the name a data check plans under when the form has none yet (nothing is written)


@dataclass(frozen=True)
class UploadedData:
    """An uploaded training file, read and deleted: its own name (never the server's path) and its bytes."""

    name: str
    raw: bytes
    columns: tuple[str, ...] | None  # a CSV file's columns, for the picker


def upload_info_html(upload: UploadedData, lang: str) -> str:
    """The line under the upload once the server has read the file: its name and size."""
    size = f"{len(upload.raw) / 1024:,.1f} KB"
    return f"<div class='ft-upload-info'>{escape(t('finetune.upload_read', lang, name=upload.name, size=size))}</div>"


def training_data(pasted_text: str, upload_path: str | None, upload_data: UploadedData | None, column_name: str | None):
    """An upload when there is one, else the pasted text. A file the page shows but the server has not read (its
    upload event still on the way, or the file refused) is an error, not the pasted text in its place."""
    if upload_data is not None:
        return uploaded_text(upload_data, column_name)
    if upload_path:
        raise PlaygroundError(key="finetune.upload_not_read")
    return pasted_text or ""


def held_out_data(upload_path: str | None, upload_data: UploadedData | None, column_name: str | None):
    """The test file's texts, or None; a CSV's column is the training file's when it has one, else its own default."""
    if upload_data is None:
        if upload_path:
            raise PlaygroundError(key="finetune.upload_not_read")
        return None
    column_name = column_name if upload_data.columns and column_name in upload_data.columns else None
    return uploaded_text(upload_data, column_name)


def method_choices(lang: str) -> list[tuple[str, str]]:
    return [(t("finetune.method_full", lang), "full"), (t("finetune.method_lora", lang), "lora")]


def read_upload(path: str | Path) -> UploadedData:
    """Check an uploaded file (format, size, encoding, a CSV's header) and keep its bytes; the file is deleted
    whatever happens, so nothing uploaded stays on the server's disk."""
    path = Path(path)
    try:
        columns = None
        if path.suffix.lower() == ".csv":
            columns = tuple(csv_columns(path))
        else:
            read_file(path)  # the decoding and format errors now, while the user looks at the form
        return UploadedData(path.name, path.read_bytes(), columns)
    finally:
        delete_upload(path)


def uploaded_text(upload: UploadedData, column: str | None):
    """The TrainingText of an upload (`column` for a CSV), read through the engine from a private copy that is
    deleted straight after."""
    with tempfile.TemporaryDirectory(prefix="gpt2-playground-data-") as folder:
        path = Path(folder) / Path(upload.name).name
        path.write_bytes(upload.raw)
        return read_file(path, column or None)


def settings_from_form(*values, lang: str = "en") -> FineTuneSettings:
    """The form's values (SETTING_NAMES order; blanks mean the default) -> checked settings, or gr.Error in `lang`."""
    form = {}
    for name, value in zip(SETTING_NAMES, values):
        if isinstance(value, str):
            value = value.strip()
        form[name] = None if value in ("", None) or (name == "max_steps" and value == 0) else value
    try:
        return FineTuneSettings.from_user(**form)
    except PlaygroundError as exc:
        raise ui_error(exc, lang) from None


# --- what the tab shows (server-rendered, escaped) -----------------------------------------------


def preview_html(plan, lang: str = "en") -> str:
    """The data check: statistics, the run's steps and device, notices, and the first examples with their token counts."""
    stats = plan.data.stats
    unk = "—" if stats.get("unk_fraction") is None else f"{stats['unk_fraction']:.1%}"
    lines = [
        t("finetune.preview_source", lang, source=escape(stats["source"]), encoding=escape(stats["encoding"])),
        t("finetune.preview_stats", lang, texts=stats["texts"], tokens=stats["tokens"], short=stats["short_texts"], unk=unk),
        t("finetune.preview_blocks", lang, block=stats["block_size"], train=stats["train_blocks"], val=stats["val_blocks"],
          val_tokens=stats["val_tokens"]),
        t("finetune.preview_run", lang, steps=plan.total_steps, device=plan.device, precision=plan.precision,
          rate=f"{plan.settings.effective_learning_rate:g}"),
    ]
    if stats.get("test_blocks"):
        lines.insert(3, t("finetune.preview_test", lang, test=stats["test_blocks"], test_tokens=stats["test_tokens"]))
    notices = "".join(f"<li>{escape(error_text(n, lang))}</li>" for n in plan.notices)
    rows = "".join(f"<tr><td>{i}</td><td>{p['tokens']}</td><td>{p['chars']}</td><td class='ft-text'>{escape(p['text'])}"
                   f"{'…' if p['chars'] > len(p['text']) else ''}</td></tr>" for i, p in enumerate(plan.data.preview, 1))
    head = "".join(f"<th>{escape(t(key, lang))}</th>" for key in ("finetune.col_index", "finetune.col_tokens",
                                                                  "finetune.col_chars", "finetune.col_text"))
    summary = plan.summary()
    command = summary["command"]
    pasted = t("finetune.preview_command_pasted", lang) if "DATA_FILE.txt" in command else ""
    return (f"<div class='ft-preview'>{''.join(f'<div>{line}</div>' for line in lines)}"
            + (f"<ul class='ft-notices'>{notices}</ul>" if notices else "")
            + f"<div style='margin-top:6px'><b>{escape(t('finetune.preview_examples', lang))}</b></div>"
            "<table style='width:100%;border-collapse:collapse;font-size:90%'>"
            f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
            f"<div style='margin-top:6px'>{escape(t('finetune.preview_windows', lang))}</div>"
            + "".join(f"<div class='ft-block'>{''.join(_block_token(token) for token in block)}</div>" for block in summary["blocks"])
            + f"<div style='margin-top:6px'>{escape(t('finetune.preview_command', lang))} {escape(pasted)}</div>"
            f"<pre class='ft-command' style='white-space:pre-wrap;word-break:break-all'><code>{escape(command)}</code></pre></div>")


def _block_token(token: dict) -> str:
    """One token of a block preview: grey when it is only read, red when [UNK], boxed when a separator."""
    style = "padding:0 1px;border-radius:3px;"
    if not token["target"]:
        style += "color:#9ca3af;background:#f3f4f6;"
    if token["unk"]:
        style += "color:#b91c1c;background:#fee2e2;"
    elif token["special"]:
        style += "outline:1px solid #9ca3af;"
    kind = "ctx" if not token["target"] else "unk" if token["unk"] else "sep" if token["special"] else "tgt"
    return f"<span class='ft-tok ft-{kind}' style='{style}'>{escape(token['text'])}</span>"


def _duration(seconds) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "…"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


def progress_html(job: dict | None, lang: str = "en") -> str:
    """The job's head line, a progress bar with step / total, and its speed, time left and losses."""
    if job is None:
        return f"<div id='ft-job-none'>{escape(t('finetune.no_job', lang))}</div>"
    progress = job.get("progress") or {}
    step, total = progress.get("step") or 0, progress.get("total_steps") or 0
    status = job["status"]
    fraction = 1.0 if status == "complete" else (step / total if total else 0.0)
    phase = progress.get("phase") or "queued"
    head = t("finetune.job_head", lang, id=job["id"], name=escape(job["name"]), base=escape(job["base_model"]),
             status=escape(t(f"finetune.status.{status}", lang) if f"finetune.status.{status}" in _STATUS_KEYS else status))
    parts = [t("finetune.step", lang, step=step, total=total)]
    if status == "running":
        parts.append(escape(t(f"finetune.phase.{phase}", lang) if f"finetune.phase.{phase}" in _PHASE_KEYS else phase))
    if progress.get("tokens_per_s"):
        parts.append(t("finetune.tokens_per_s", lang, tps=f"{progress['tokens_per_s']:,.0f}"))
    if status == "running" and phase == "training":
        parts.append(t("finetune.eta", lang, eta=_duration(progress.get("eta_s"))))
    parts.append(t("finetune.elapsed", lang, elapsed=_duration(progress.get("elapsed_s"))))
    if progress.get("train_loss") is not None:
        parts.append(t("finetune.train_loss", lang, loss=f"{progress['train_loss']:.3f}"))
    if progress.get("val_loss") is not None:
        parts.append(t("finetune.val_loss", lang, loss=f"{progress['val_loss']:.3f}"))
    if progress.get("checkpoint_step"):
        parts.append(t("finetune.checkpoint_at", lang, step=progress["checkpoint_step"]))
    colour = {"error": "#dc2626", "cancelled": "#9ca3af", "complete": "#16a34a"}.get(status, "#2563eb")
    percent = max(0.0, min(100.0, 100 * fraction))
    return (f"<div class='ft-job' data-status='{escape(status)}'><div style='font-weight:600'>{head}</div>"
            f"<div role='progressbar' aria-valuemin='0' aria-valuemax='{total}' aria-valuenow='{step}' "
            "style='height:14px;background:#e5e7eb;border-radius:7px;overflow:hidden;margin:6px 0'>"
            f"<div style='height:100%;width:{percent:.1f}%;background:{colour};transition:width .4s'></div></div>"
            f"<div class='ft-stats'>{' · '.join(parts)}</div></div>")


def result_html(job: dict | None, lang: str = "en") -> str:
    """At the end: perplexity before -> after and the new model's name; or why the job stopped."""
    if job is None or job["status"] == "running":
        return ""
    if job["status"] == "complete" and job.get("report"):
        report = job["report"]
        change = report.get("val_perplexity_change")
        return (f"<div class='ft-result'><div>{t('finetune.done', lang, name=escape(job['name']), base=escape(job['base_model']))}</div>"
                f"<div>{t('finetune.perplexity', lang, before=report['val_perplexity_before'], after=report['val_perplexity_after'], change=f'{change:+.1%}' if change is not None else '—')}</div>"
                f"<div>{t('finetune.seconds', lang, steps=report.get('steps', '?'), seconds=report.get('total_seconds', '?'))}</div>"
                + (f"<div class='ft-test'>{escape(test_text(report['test'], lang))}</div>" if report.get("test") else "")
                + (f"<div class='ft-stopped-early'>{escape(stopped_early_text(report['stopped_early'], lang))}</div>"
                   if report.get("stopped_early") else "")
                + (f"<div class='ft-kept-best'>{escape(kept_best_text(report['kept_best'], lang))}</div>" if report.get("kept_best") else "")
                + (f"<div class='ft-tensorboard'>{escape(t('finetune.tensorboard', lang))} "
                   f"<code>tensorboard --logdir {escape(report['tensorboard'])}</code></div>" if report.get("tensorboard") else "")
                + "</div>")
    checkpoint = (job.get("progress") or {}).get("checkpoint_step")
    hint = f"<div class='ft-resume-hint'>{escape(t('finetune.resume_hint', lang, step=checkpoint))}</div>" if checkpoint else ""
    if job["status"] == "cancelled":
        return f"<div class='ft-result'>{escape(t('finetune.cancelled', lang))}{hint}</div>"
    return (f"<div class='ft-result'><div style='color:#b91c1c'>{escape(t('finetune.failed', lang))} "
            f"<code>{escape(job_error_text(job.get('error'), lang))}</code></div>{hint}</div>")


def stopped_choices(jobs: list[dict], lang: str) -> list[tuple[str, str]]:
    """The Stopped jobs picker's entries: (what a user reads, the job's name)."""
    return [(t("finetune.stopped_job", lang, name=j["name"], base=j["base_model"], step=j["step"], total=j["total_steps"] or "?"),
             j["name"]) for j in jobs]


def job_error_text(error: dict | None, lang: str) -> str:
    """A job's stored error in `lang`: its locale key and parameters, or the text of one saved before errors had keys."""
    if not error:
        return ""
    if error.get("key"):
        return t(error["key"], lang, **error.get("params", {}))
    return error.get("text", "")


def loss_figure(job: dict | None, lang: str = "en"):
    """Training loss at every step and validation loss at each evaluation (step 0: before training)."""
    import plotly.graph_objects as go

    figure = go.Figure()
    progress = (job or {}).get("progress") or {}
    train, val = progress.get("train_losses") or [], progress.get("val_losses") or []
    if train:
        figure.add_trace(go.Scatter(x=[s for s, _ in train], y=[v for _, v in train], name=t("finetune.plot_train", lang),
                                    mode="lines", line={"width": 2}))
    if val:
        figure.add_trace(go.Scatter(x=[s for s, _ in val], y=[v for _, v in val], name=t("finetune.plot_val", lang),
                                    mode="lines+markers", line={"dash": "dash", "width": 2}, marker={"size": 7}))
    figure.update_layout(height=300, margin={"l": 50, "r": 20, "t": 40, "b": 40}, title=t("finetune.plot_title", lang),
                         xaxis_title=t("finetune.plot_x", lang), yaxis_title=t("finetune.plot_y", lang),
                         legend={"orientation": "h", "y": -0.25})
    return figure


_STATUS_KEYS = {f"finetune.status.{s}" for s in ("running", "complete", "cancelled", "error")}
_PHASE_KEYS = {f"finetune.phase.{p}" for p in ("queued", "loading", "evaluating", "training", "saving", "complete")}


# --- the tab ------------------------------------------------------------------------------------


def build_finetune_tab(playground: Playground, tabs: gr.Tabs | None = None, compare_sides: dict | None = None) -> dict:
    """Lay out the tab inside a gr.Tab and wire its events.

    `tabs` and `compare_sides` ({"a": (model, backend, variant), "b": ...}, the Compare tab's components) let
    "Compare with the base model" open the Compare tab with base vs fine-tuned; without them the button is hidden.
    Returns the tab's main components by name, for tests and other tabs.
    """
    jobs = playground.finetune_jobs
    context = playground.backend().info.context_length
    defaults = FineTuneSettings()
    gr.Markdown(translated("finetune.intro"))
    upload_state = gr.State(None, time_to_live=3600)  # an UploadedData: its bytes live as long as the session, at most an hour
    test_state = gr.State(None, time_to_live=3600)  # the test file's UploadedData, the same way
    seen = gr.State(None)  # what this page last rendered of the job, so an unchanged job is not re-drawn
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=320):
            with gr.Row():
                base = gr.Dropdown(playground.model_choices(), value=playground.source.name, label=translated("finetune.base"),
                                   allow_custom_value=True, info=translated("generate.model_info"), elem_id="ft-base")
                name = gr.Textbox(label=translated("finetune.name"), info=translated("finetune.name_info"),
                                  placeholder="my-gpt2", elem_id="ft-name")
            pasted = gr.Textbox(label=translated("finetune.paste"), info=translated("finetune.paste_info"), lines=6, max_lines=14,
                                elem_id="ft-text")
            with gr.Row(equal_height=False):
                upload = gr.File(label=translated("finetune.upload"), file_types=list(FORMATS), file_count="single",
                                 type="filepath", height=120, elem_id="ft-upload")
                column = gr.Dropdown([], label=translated("finetune.column"), info=translated("finetune.column_info"),
                                     visible=False, elem_id="ft-column")
            # What the server made of the file (its name and size), once it has read it: Check and Start use it from then.
            upload_info = gr.HTML("", elem_id="ft-upload-info")
            gr.Markdown(translated("finetune.upload_note"), elem_id="ft-upload-note")
        with gr.Column(scale=2, min_width=300):
            method = gr.Radio(method_choices("en"), value="full", label=translated("finetune.method_label"), elem_id="ft-method")
            with gr.Row():  # empty: the default for the base model's size (the info says how; Check data shows the rate)
                learning_rate = gr.Textbox(label=translated("finetune.learning_rate"), placeholder="auto",
                                           info=translated("finetune.learning_rate_info"), elem_id="ft-lr")
                seed = gr.Number(defaults.seed, precision=0, label=translated("finetune.seed"), elem_id="ft-seed")
            with gr.Row():
                epochs = gr.Number(defaults.epochs, precision=0, label=translated("finetune.epochs"), elem_id="ft-epochs")
                max_steps = gr.Number(0, precision=0, label=translated("finetune.max_steps"),
                                      info=translated("finetune.max_steps_info"), elem_id="ft-max-steps")
            with gr.Row():
                batch_size = gr.Number(defaults.batch_size, precision=0, label=translated("finetune.batch_size"),
                                       elem_id="ft-batch")
                accumulation = gr.Number(defaults.gradient_accumulation, precision=0,
                                         label=translated("finetune.accumulation"), elem_id="ft-accumulation")
                block_size = gr.Number(min(defaults.block_size, context), precision=0,
                                       label=translated("finetune.block_label"), elem_id="ft-block")
            with gr.Accordion(translated("finetune.advanced"), open=False):
                with gr.Row():
                    warmup = gr.Number(defaults.warmup_steps, precision=0, label=translated("finetune.warmup"),
                                       elem_id="ft-warmup")
                    weight_decay = gr.Number(defaults.weight_decay, label=translated("finetune.weight_decay"),
                                             elem_id="ft-weight-decay")
                    clipping = gr.Number(defaults.max_grad_norm, label=translated("finetune.clipping"),
                                         info=translated("finetune.clipping_info"), elem_id="ft-clipping")
                with gr.Row():
                    patience = gr.Number(defaults.early_stopping_patience, precision=0, label=translated("finetune.patience"),
                                         info=translated("finetune.patience_info"), elem_id="ft-patience")
                    min_delta = gr.Number(defaults.early_stopping_min_delta, label=translated("finetune.min_delta"),
                                          info=translated("finetune.min_delta_info"), elem_id="ft-min-delta")
                    test_fraction = gr.Number(defaults.test_fraction, label=translated("finetune.test_fraction"),
                                              info=translated("finetune.test_fraction_info"), elem_id="ft-test-fraction")
                test_upload = gr.File(label=translated("finetune.test_file"), file_types=list(FORMATS), file_count="single",
                                      type="filepath", height=90, elem_id="ft-test-upload")
                gr.Markdown(translated("finetune.test_file_info"))
            with gr.Accordion(translated("finetune.lora"), open=False):
                with gr.Row():
                    lora_rank = gr.Number(defaults.lora_rank, precision=0, label=translated("finetune.lora_rank"),
                                          elem_id="ft-lora-rank")
                    lora_alpha = gr.Number(defaults.lora_alpha, label=translated("finetune.lora_alpha"),
                                           elem_id="ft-lora-alpha")
                    lora_dropout = gr.Number(defaults.lora_dropout, label=translated("finetune.lora_dropout"),
                                             elem_id="ft-lora-dropout")
                lora_targets = gr.Textbox(", ".join(GPT2_LORA_TARGETS), label=translated("finetune.lora_targets"),
                                          info=translated("finetune.lora_targets_info"), elem_id="ft-lora-targets")
    with gr.Row():
        check_btn = gr.Button(translated("finetune.check"), scale=0, min_width=180, elem_id="ft-check")
        start_btn = gr.Button(translated("finetune.start"), variant="primary", scale=0, min_width=180, elem_id="ft-start")
        cancel_btn = gr.Button(translated("finetune.cancel"), variant="stop", scale=0, min_width=140, interactive=False,
                               elem_id="ft-cancel")
    with gr.Row(visible=False, elem_id="ft-stopped-row") as stopped_row:  # shown on load when the viewer has one
        stopped = gr.Dropdown([], label=translated("finetune.stopped_jobs"), info=translated("finetune.stopped_jobs_info"),
                              scale=3, elem_id="ft-stopped")
        resume_btn = gr.Button(translated("finetune.resume"), scale=0, min_width=180, elem_id="ft-resume")
    preview = gr.HTML(elem_id="ft-preview")
    progress = gr.HTML(progress_html(None), elem_id="ft-progress")
    plot = gr.Plot(loss_figure(None), elem_id="ft-plot")
    result = gr.HTML(elem_id="ft-result")
    compare_btn = gr.Button(translated("finetune.compare"), visible=False, scale=0, min_width=260, elem_id="ft-compare")
    timer = gr.Timer(POLL_S)
    localize_on_load([method], lambda lang: gr.update(choices=method_choices(lang)))
    localize_on_load([learning_rate], lambda lang: gr.update(placeholder=t("finetune.lr_auto", lang)))
    setting_inputs = [method, learning_rate, epochs, max_steps, batch_size, accumulation, block_size, warmup, weight_decay,
                      clipping, patience, min_delta, test_fraction, seed, lora_rank, lora_alpha, lora_dropout, lora_targets]

    def on_upload(path, request: gr.Request):
        lang = lang_of(request)
        if not path:
            return None, gr.update(choices=[], value=None, visible=False), ""
        try:
            uploaded = read_upload(path)
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        if uploaded.columns is None:
            return uploaded, gr.update(choices=[], value=None, visible=False), upload_info_html(uploaded, lang)
        chosen = "text" if "text" in uploaded.columns else uploaded.columns[0]
        return uploaded, gr.update(choices=list(uploaded.columns), value=chosen, visible=True), upload_info_html(uploaded, lang)

    def on_test_upload(path, request: gr.Request):
        if not path:
            return None
        try:
            return read_upload(path)
        except PlaygroundError as exc:
            raise ui_error(exc, lang_of(request)) from None

    def free_name(stem: str) -> str:
        number, candidate = 1, stem
        while (playground.models_root / candidate).exists():
            number += 1
            candidate = f"{stem}-{number}"
        return candidate

    def on_check(request: gr.Request, base_name, pasted_text, upload_path, upload_data, column_name, test_path, test_upload_data,
                 model_name, *values):
        """Every check a start would make, and the data preview; nothing is trained or written."""
        lang = lang_of(request)
        settings = settings_from_form(*values, lang=lang)
        try:
            source = playground.source_for(base_name)
            data = training_data(pasted_text, upload_path, upload_data, column_name)
            # Before the form has a name, plan under a free one, so the data can be checked first.
            name = (model_name or "").strip() or free_name(PREVIEW_NAME)
            plan = plan_finetune(source, data, settings, name, playground.models_root,
                                 test_data=held_out_data(test_path, test_upload_data, column_name))
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        return preview_html(plan, lang)

    def on_start(request: gr.Request, base_name, pasted_text, upload_path, upload_data, column_name, test_path, test_upload_data,
                 model_name, *values):
        lang = lang_of(request)
        settings = settings_from_form(*values, lang=lang)
        try:
            source = playground.source_for(base_name)
            data = training_data(pasted_text, upload_path, upload_data, column_name)
            # every check first, then training on its own thread
            job = jobs.start(source, data, settings, model_name, owner=request.username or "",
                             test_data=held_out_data(test_path, test_upload_data, column_name))
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        info("finetune.started", lang, name=job["name"], steps=job["progress"]["total_steps"])
        # The timer draws the job within POLL_S, here and in every other open page alike.

    def on_resume(request: gr.Request, chosen):
        lang = lang_of(request)
        if not chosen:
            raise gr.Error(t("finetune.nothing_to_resume", lang))
        try:
            job = jobs.resume(chosen, owner=playground.viewer(request.username))
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        info("finetune.resumed", lang, name=job["name"], step=job["progress"]["step"], total=job["progress"]["total_steps"])

    def stopped_update(request: gr.Request, lang: str):
        """The viewer's stopped jobs in the picker (the row hidden when there are none)."""
        choices = stopped_choices(jobs.resumable(playground.viewer(request.username)), lang)
        return gr.update(visible=bool(choices)), gr.update(choices=choices, value=choices[0][1] if choices else None)

    def on_cancel(request: gr.Request):
        lang = lang_of(request)
        info("finetune.cancelling" if jobs.cancel(playground.viewer(request.username)) else "finetune.nothing_running", lang)

    def render_stamp(job, lang):
        return None if job is None else (job["id"], job.get("updated_at"), job["status"], lang)

    def render_job(job, lang):
        return progress_html(job, lang), loss_figure(job, lang), result_html(job, lang), compare_button(job)

    # Drawn in the browser's language as the page opens, not only at the timer's first tick.
    localize_on_load([progress, plot, result], lambda lang, request: render_job(jobs.current(playground.viewer(request.username)), lang)[:3],
                     with_request=True)
    localize_on_load([stopped_row, stopped], lambda lang, request: stopped_update(request, lang), with_request=True)

    def compare_button(job):
        complete = job is not None and job["status"] == "complete" and job["name"] in playground.model_choices()
        return gr.update(visible=complete and compare_sides is not None and tabs is not None)

    def on_tick(last, request: gr.Request):
        lang = lang_of(request)
        job = jobs.current(playground.viewer(request.username))
        stamp = render_stamp(job, lang)
        running = job is not None and job["status"] == "running"
        # The buttons' state is sent every time: Gradio 6.17's front end resets a component that gets an empty
        # update (gr.skip()) to its initial visibility and interactivity.
        buttons = (gr.update(interactive=not running), gr.update(interactive=running))
        resume_button = gr.update(interactive=not running)
        row, picker = stopped_update(request, lang)
        if stamp == last and last is not None:
            # The row's visibility is sent every time too (see above); the picker's choices only when the job changed, so
            # that a choice being made is not reset.
            return (gr.skip(), gr.skip(), gr.skip(), compare_button(job), *buttons, resume_button, row, gr.skip(), gr.skip())
        # The job changed (started, stopped, finished): the stopped jobs may have too.
        return (*render_job(job, lang), *buttons, resume_button, row, picker, stamp)

    def on_compare(request: gr.Request):
        """Open the Compare tab with side A = the base model and side B = the fine-tuned one, both on PyTorch."""
        job = jobs.current(playground.viewer(request.username))
        if job is None or job["status"] != "complete":
            return (gr.skip(),) * 7
        choices = playground.model_choices()
        return (gr.Tabs(selected="compare"), gr.update(choices=choices, value=job["base_model"]), "torch",
                gr.update(interactive=False), gr.update(choices=choices, value=job["name"]), "torch", gr.update(interactive=False))

    def refresh_models():
        return gr.update(choices=playground.model_choices())

    form = [base, pasted, upload, upload_state, column, test_upload, test_state, name, *setting_inputs]
    job_views = [progress, plot, result, compare_btn]
    # A new file first forgets the last one: a file that is then refused must not leave the one before it to be trained on.
    forget_upload = dict(fn=lambda: (None, gr.update(choices=[], value=None, visible=False), ""),
                         outputs=[upload_state, column, upload_info], queue=False, api_visibility="private")
    upload.upload(**forget_upload).then(on_upload, inputs=[upload], outputs=[upload_state, column, upload_info],
                                        api_visibility="private")
    upload.clear(**forget_upload)
    forget_test = dict(fn=lambda: None, outputs=[test_state], queue=False, api_visibility="private")
    test_upload.upload(**forget_test).then(on_test_upload, inputs=[test_upload], outputs=[test_state], api_visibility="private")
    test_upload.clear(**forget_test)
    check_btn.click(on_check, inputs=form, outputs=[preview], api_visibility="private", concurrency_id="finetune-check")
    # No outputs: an error would otherwise be drawn over the last job's progress, plot and result.
    start_btn.click(on_start, inputs=form, outputs=None, api_visibility="private", concurrency_id="finetune-check")
    cancel_btn.click(on_cancel, outputs=None, api_visibility="private", **STOP_EVENT)
    resume_btn.click(on_resume, inputs=[stopped], outputs=None, api_visibility="private", concurrency_id="finetune-check")
    timer.tick(on_tick, inputs=[seen], outputs=[*job_views, start_btn, cancel_btn, resume_btn, stopped_row, stopped, seen], queue=False,
               show_progress="hidden", api_visibility="private")
    base.focus(refresh_models, outputs=[base], queue=False, api_visibility="private")
    if tabs is not None and compare_sides is not None:
        compare_btn.click(on_compare, outputs=[tabs, *compare_sides["a"], *compare_sides["b"]], queue=False,
                          api_visibility="private")
    return {"base": base, "name": name, "text": pasted, "upload": upload, "start": start_btn, "compare": compare_btn,
            "stopped": stopped, "resume": resume_btn}
