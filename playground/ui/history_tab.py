"""The History tab: recent runs, full-text search, filters, open a run, reuse its settings, delete, export."""

from __future__ import annotations

import tempfile
from html import escape
from pathlib import Path

import gradio as gr

from ..config import GenerationSettings
from ..errors import PlaygroundError
from ..experiments.intervention import Intervention
from ..records import result_from_saved
from ..service import Playground
from .code_view import build_code_view, code_values
from .i18n import EN, error, info, lang_of, localize_on_load, t, translated, warning
from .render import beam_tree_html, stats_markdown, token_view_html

ALL = "(all)"
TABLE_COLUMNS = ["id", "time", "model", "backend", "prompt", "tokens_per_s", "status", "group"]
PAGE_SIZE = 200
# How often an open page asks whether runs were saved or deleted (by any tab, API client or other page).
POLL_S = 2.0

# The runs table is plain HTML that we write, not a gr.Dataframe: in Gradio 6.11 and later (we are pinned to 6.17.3)
# a Dataframe of 200 runs in this app took 45 to 76 s to show when its tab opened, minutes on a loaded machine, the
# browser busy re-running Svelte effects throughout (gradio-app/gradio#13448 is one form of it). A table of 200 rows of
# text needs no virtual scrolling. A click on a row sends its run id as a select event; so do Enter and Space.
RUNS_TABLE_JS = """
if (!element.dataset.wired) {
  element.dataset.wired = "1";
  const pick = (row) => {
    element.querySelectorAll("tr.picked").forEach((r) => r.classList.remove("picked"));
    row.classList.add("picked");
    trigger("select", {index: Number(row.dataset.row), value: Number(row.dataset.runId)});
  };
  element.addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-run-id]");
    if (row) pick(row);
  });
  element.addEventListener("keydown", (event) => {
    const row = event.target.closest("tr[data-run-id]");
    if (row && (event.key === "Enter" || event.key === " ")) { event.preventDefault(); pick(row); }
  });
}
"""


def status_text(status: str, lang: str) -> str:
    """A run's status (complete, stopped, error) as `lang` says it."""
    key = f"history.status.{status}"
    return t(key, lang) if key in EN else status


def intervention_note(intervention: dict | None) -> str:
    """" · heads 0.1 · zero" for a run made with an experiment's intervention (the Experiments tab); "" for a plain run."""
    return f" · {Intervention.from_dict(intervention).describe()}" if intervention else ""


def table_rows(runs: list[dict], lang: str = "en", show_owner: bool = False) -> list[list]:
    """Rows for the runs table; cells are plain text. `show_owner` adds the login each run was made under."""
    rows = []
    for run in runs:
        tps = (run.get("metrics") or {}).get("decode_tokens_per_s")
        prompt = " ".join((run.get("prompt") or "").split())
        rows.append([
            run["id"],
            run["created_at"][:19].replace("T", " "),
            run.get("model") or "",
            f"{run.get('backend') or ''} {run.get('variant') or ''}".strip() + intervention_note(run.get("intervention")),
            prompt[:80] + ("…" if len(prompt) > 80 else ""),
            round(tps, 1) if tps else None,
            status_text(run["status"], lang),
            # Samples of one batch or sweep: the group (search "group:ID" lists it) and the sample's index in it.
            f"{run['group_id']} #{run.get('sample_index')}" if run.get("group_id") else "",
            *([run.get("owner") or t("history.local_owner", lang)] if show_owner else []),
        ])
    return rows


def match_html(match: dict | None, lang: str) -> str:
    """Where a search found a run: in its prompt, its output or across the two, and the words around it (escaped)."""
    if not match:
        return ""
    place = match["where"]
    where = t(f"history.where.{place}", lang)
    return (f'<span class="match-where">{escape(where)}</span> '
            f'{escape(match["before"])}<mark>{escape(match["match"])}</mark>{escape(match["after"])}')


def table_html(runs: list[dict], lang: str, show_owner: bool = False) -> str:
    """The runs table: a row per run (`data-run-id`), a cell per column (`data-col`), every cell's text escaped;
    `show_owner` adds a column, the user who made the run; runs found by a search (HistoryStore.search gives them a
    `match`) a last one, where the search found each."""
    show_match = any("match" in run for run in runs)
    columns = [*TABLE_COLUMNS, *(["owner"] if show_owner else []), *(["match"] if show_match else [])]
    head = "".join(f'<th data-col="{i}">{escape(t(f"history.col.{column}", lang))}</th>' for i, column in enumerate(columns))
    body = "".join(
        f'<tr data-row="{i}" data-run-id="{run["id"]}" tabindex="0">'
        + "".join(f'<td data-col="{j}">{"" if cell is None else escape(str(cell))}</td>' for j, cell in enumerate(row))
        + (f'<td data-col="{len(row)}" class="match">{match_html(run.get("match"), lang)}</td>' if show_match else "") + "</tr>"
        for i, (run, row) in enumerate(zip(runs, table_rows(runs, lang, show_owner))))
    if not runs:
        body = f'<tr class="empty"><td colspan="{len(columns)}">{escape(t("history.empty", lang))}</td></tr>'
    return f'<div class="runs-table"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def filter_choices(values: list[str], lang: str) -> list[tuple[str, str]]:
    """A filter's choices: "(all)", named in `lang`, then `values`."""
    return [(t("history.all", lang), ALL), *((value, value) for value in values)]


def scope_choices(lang: str) -> list[tuple[str, str]]:
    return [(t("history.scope_shown", lang), "shown"), (t("history.scope_group", lang), "group"), (t("history.scope_all", lang), "all")]


def settings_for_ui(settings: dict) -> dict:
    """Stored settings -> values for the Generate tab's components."""
    values = GenerationSettings().to_dict() | dict(settings)  # a run saved before a setting existed: its default
    values["early_stopping"] = str(values["early_stopping"]).lower()  # the radio's "false", "true", "never"
    values["stop_sequences"] = "\n".join(s.replace("\n", "\\n") for s in settings.get("stop_sequences") or [])
    values["seed"] = "" if settings.get("seed") is None else str(settings["seed"])
    return values


def build_history_tab(playground: Playground, generate_inputs: dict, tabs: gr.Tabs, last_result: gr.State,
                      refresh_attention: dict, open_inside: dict | None = None) -> None:
    """Lay out the tab; `generate_inputs` are the Generate tab's components, filled by "Use these settings";
    "Show attention" puts the selected run in `last_result` and opens the Attention tab, "Look inside" the Inside tab.
    The table lists the newest runs as the page loads and follows the history from then on (see POLL_S)."""
    store = playground.history
    if store is None:
        disabled = gr.Markdown(t("history.disabled", "en", reason=playground.history_disabled), elem_id="history-disabled")
        localize_on_load([disabled], lambda lang: t("history.disabled", lang, reason=playground.history_disabled))
        return

    with gr.Row():
        query = gr.Textbox(label=translated("history.search"), placeholder=translated("history.search_placeholder"), scale=4, elem_id="history-search")
        model_filter = gr.Dropdown([ALL], value=ALL, label=translated("history.model"), scale=1, allow_custom_value=False)
        backend_filter = gr.Dropdown(filter_choices(["torch", "onnx"], "en"), value=ALL, label=translated("history.backend"), scale=1, elem_id="history-backend")
        refresh = gr.Button(translated("history.refresh"), scale=0)
    table = gr.HTML(table_html([], "en"), js_on_load=RUNS_TABLE_JS, elem_id="history-table")
    shown_ids = gr.State([])  # ids of the rows in the table, in order
    shown_revision = gr.State(None)  # the history's revision when the table was listed (HistoryStore.revision)
    selected_id = gr.State(None)

    with gr.Row():
        use_btn = gr.Button(translated("history.use"), variant="primary", elem_id="history-use", interactive=False)
        attention_btn = gr.Button(translated("history.attention"), elem_id="history-attention", interactive=False)
        inside_btn = gr.Button(translated("history.inside"), elem_id="history-inside", interactive=False, visible=open_inside is not None)
        delete_btn = gr.Button(translated("history.delete"), variant="stop", elem_id="history-delete", interactive=False)
        confirm_btn = gr.Button(translated("history.confirm_delete"), variant="stop", visible=False, elem_id="history-confirm")
        cancel_btn = gr.Button(translated("history.cancel"), visible=False)
    with gr.Group():
        run_title = gr.Markdown(translated("history.select_hint"), elem_id="history-run")
        run_output = gr.Textbox(label=translated("history.output"), lines=4, max_lines=12, interactive=False, elem_id="history-output")
        run_tokens = gr.HTML(token_view_html(None), elem_id="history-token-view")
        with gr.Row():
            run_settings = gr.JSON(label=translated("history.settings"))
            run_metrics = gr.JSON(label=translated("history.metrics"))
        with gr.Accordion(translated("code.title"), open=False, elem_id="history-code"):
            code_outputs = build_code_view("history")
    with gr.Accordion(translated("history.export"), open=False, elem_id="history-export"):
        with gr.Row():
            export_format = gr.Radio([("JSON Lines", "jsonl"), ("CSV", "csv")], value="jsonl", label=translated("history.format"))
            export_scope = gr.Radio(scope_choices("en"), value="shown", label=translated("history.scope"), elem_id="history-scope")
            export_btn = gr.Button(translated("history.export_button"), scale=0, elem_id="history-export-btn")
        export_file = gr.File(label=translated("history.download"), interactive=False, elem_id="history-export-file")
    listed = [table, shown_ids, model_filter, backend_filter, shown_revision]

    def viewer(request: gr.Request) -> str | None:
        """Whose runs this page may list, open, reuse, export and delete (Playground.viewer): with a login, the
        user's own; everyone's for an admin and for the local user of an app without a login."""
        return playground.viewer(request.username if request else None)

    def listing(q: str, model: str, backend: str, lang: str, owner: str | None) -> tuple:
        """Values for `listed`: the runs that the search and filters find among `owner`'s, newest first."""
        revision = store.revision(owner)  # before the search: a run saved during it is listed at the next look
        model, backend = (None if model == ALL else model), (None if backend == ALL else backend)
        runs = store.search(q or "", PAGE_SIZE, model, backend, owner=owner)
        # The backends offered are those in the history (torch, onnx, and remote engines once used).
        # Whose each run is, for whoever sees several users' runs (an admin; the local user of a history that has some).
        show_owner = owner is None and any(r.get("owner") for r in runs)
        return (table_html(runs, lang, show_owner), [r["id"] for r in runs],
                gr.update(choices=filter_choices(store.distinct("model", owner), lang)),
                gr.update(choices=filter_choices(sorted({"torch", "onnx", *store.distinct("backend", owner)}), lang)), revision)

    # The page opens with the newest runs listed, in its language.
    localize_on_load([*listed, export_scope, run_tokens], lambda lang, request: (
        *listing("", ALL, ALL, lang, viewer(request)), gr.update(choices=scope_choices(lang)), token_view_html(None, lang=lang)),
        with_request=True)

    def list_runs(q: str, model: str, backend: str, request: gr.Request):
        return listing(q, model, backend, lang_of(request), viewer(request))

    def list_if_changed(q: str, model: str, backend: str, shown: tuple | None, request: gr.Request):
        """List again only when a run was saved or deleted since the table was listed."""
        if shown is not None and store.revision(viewer(request)) == tuple(shown):
            return (gr.skip(),) * len(listed)
        return list_runs(q, model, backend, request)

    def codec_for(run: dict):
        """The run's model's tokens, for a run saved before records carried bytes; None if not needed or not loadable."""
        tokens = run.get("tokens") or {}
        if all("bytes" in record for part in tokens.values() for record in part):
            return None
        try:
            return playground.source_for(run.get("model")).codec
        except (PlaygroundError, OSError, ValueError):
            return None

    def open_run(ids: list[int], evt: gr.SelectData, request: gr.Request):
        lang = lang_of(request)
        run_id = evt.value
        if run_id not in ids:  # only a run this page lists (the event's data comes from the browser)
            return gr.skip()
        run = store.get(run_id, viewer(request))
        if run is None:
            warning("history.gone", lang, run_id=run_id)
            return gr.skip()
        result = result_from_saved(run, codec_for(run))
        title = (t("history.run_title", lang, run_id=run["id"], time=run["created_at"][:19].replace("T", " "),
                   status=status_text(run["status"], lang))
                 + f"\n\n{stats_markdown(result, lang=lang)}")
        if run.get("error"):
            title += "\n\n" + t("history.run_error", lang, error=run["error"])
        # A beam search run's tree (saved with its first returned sequence) under its tokens, drawn again.
        tokens_html = token_view_html(result, mark_position=result.branch_position, lang=lang) + beam_tree_html(result.beam_tree, lang)
        return (run["id"], title, run["output"], tokens_html,
                run["settings"], run["metrics"],
                gr.update(interactive=True), gr.update(interactive=True), gr.update(interactive=True), gr.update(interactive=True),
                *code_values(playground, [result], lang, request))

    def use_settings(run_id: int | None, request: gr.Request):
        run = store.get(run_id, viewer(request)) if run_id is not None else None
        if run is None:
            raise error("history.select_first", lang_of(request))
        values = settings_for_ui(run["settings"]) | {"prompt": run["prompt"], "model": run["model"], "backend": run["backend"],
                                                      "variant": run["variant"] or "fp32"}
        updates = [gr.update(value=values[name]) if name in values else gr.skip() for name in generate_inputs]
        return [*updates, gr.Tabs(selected="generate")]

    def show_attention(run_id: int | None, request: gr.Request):
        run = store.get(run_id, viewer(request)) if run_id is not None else None
        if run is None:
            raise error("history.select_first", lang_of(request))
        return result_from_saved(run, codec_for(run)), gr.Tabs(selected="attention")  # the tab computes it on opening

    def ask_delete():
        return gr.update(visible=False), gr.update(visible=True), gr.update(visible=True)

    def cancel_delete():
        return gr.update(visible=True), gr.update(visible=False), gr.update(visible=False)

    def do_delete(run_id: int | None, q: str, model: str, backend: str, request: gr.Request):
        lang = lang_of(request)
        if run_id is None or not store.delete(run_id, viewer(request)):
            warning("history.already_deleted", lang)
        else:
            info("history.deleted", lang, run_id=run_id)
        return (*list_runs(q, model, backend, request), None, t("history.select_hint", lang), "", token_view_html(None, lang=lang), None, None,
                gr.update(visible=True, interactive=False), gr.update(visible=False), gr.update(visible=False),
                gr.update(interactive=False), gr.update(interactive=False), gr.update(interactive=False))

    def export(fmt: str, scope: str, ids: list[int], run_id: int | None, request: gr.Request):
        lang, owner = lang_of(request), viewer(request)
        if scope == "group":
            run = store.get(run_id, owner) if run_id is not None else None
            if run is None:
                raise error("history.select_first", lang)
            if not run.get("group_id"):
                raise error("history.no_group", lang, run_id=run_id)
            ids = store.group_ids(run["group_id"], owner)
        out = Path(tempfile.mkdtemp(prefix="gpt2-playground-export-")) / f"history.{fmt}"
        count = store.export(out, fmt, None if scope == "all" else ids, owner=owner)
        info("history.exported", lang, count=count)
        return str(out)

    filters = [query, model_filter, backend_filter]
    relist = dict(fn=list_runs, inputs=filters, outputs=listed, api_visibility="private")
    refresh.click(**relist)
    query.submit(**relist)
    backend_filter.input(**relist)  # .input, not .change: the listing itself updates the choices
    model_filter.input(**relist)
    # Runs saved by this page (its Generate tab) show at once, those saved anywhere else within POLL_S.
    follow = dict(fn=list_if_changed, inputs=[*filters, shown_revision], outputs=listed, queue=False, show_progress="hidden",
                  api_visibility="private")
    last_result.change(**follow)
    gr.Timer(POLL_S).tick(**follow)
    table.select(open_run, inputs=[shown_ids],
                 outputs=[selected_id, run_title, run_output, run_tokens, run_settings, run_metrics, use_btn, delete_btn, attention_btn,
                          inside_btn, *code_outputs],
                 api_visibility="private")
    use_btn.click(use_settings, inputs=[selected_id], outputs=[*generate_inputs.values(), tabs], api_visibility="private")
    attention_btn.click(show_attention, inputs=[selected_id], outputs=[last_result, tabs], api_visibility="private").then(
        **refresh_attention)
    if open_inside is not None:
        def show_inside(run_id: int | None, request: gr.Request):
            result, _ = show_attention(run_id, request)
            return result, gr.Tabs(selected="inside")

        inside_btn.click(show_inside, inputs=[selected_id], outputs=[last_result, tabs], api_visibility="private").then(
            **open_inside["open"]).then(**open_inside["show"]).then(**open_inside["grid"])
    delete_btn.click(ask_delete, outputs=[delete_btn, confirm_btn, cancel_btn], queue=False, api_visibility="private")
    cancel_btn.click(cancel_delete, outputs=[delete_btn, confirm_btn, cancel_btn], queue=False, api_visibility="private")
    confirm_btn.click(do_delete, inputs=[selected_id, *filters],
                      outputs=[*listed, selected_id, run_title, run_output, run_tokens, run_settings,
                               run_metrics, delete_btn, confirm_btn, cancel_btn, use_btn, attention_btn, inside_btn],
                      api_visibility="private")
    export_btn.click(export, inputs=[export_format, export_scope, shown_ids, selected_id], outputs=[export_file], api_visibility="private")
