"""The Learn tab (学习): GPT-2 chapter by chapter, each with its text and formula, a live view of the learner's own last run
drawn by the other tabs' own functions, a try-this task checked on real runs, and a button into the full tab."""

from __future__ import annotations

from html import escape

import gradio as gr

from ..analysis.attention import RunAttention, compute_attention
from ..errors import PlaygroundError
from ..history import LOCAL_OWNER
from ..learn import checks
from ..learn.chapters import BY_ID, CHAPTERS, Chapter
from ..records import GenerationResult
from ..service import Playground
from .attention_tab import heads_picture, localized_heatmap, run_key
from .code_view import code_values
from .i18n import lang_of, localize_on_load, t, translated, ui_error
from .inside_html import funnel_table, lens_table
from .inside_tab import _choice_position, embedding_figure, funnel_figure, kv_markdown, lens_figure, position_choices, residual_figure
from .render import surprisal_figure, token_view_html

INSIDE_VIEWS = ("embedding", "residual", "lens", "funnel", "kv")  # the views drawn from the Inside report of a position
ATTENTION_VIEWS = ("attention", "heads")


def chapter_choices(done: dict[str, str], lang: str) -> list[tuple[str, str]]:
    """The chapter list: number, title, and a check mark on the chapters done."""
    return [(f"{'✓ ' if c.id in done else ''}{i}. {t(f'learn.{c.id}.title', lang)}", c.id) for i, c in enumerate(CHAPTERS, 1)]


def progress_text(done: dict[str, str], lang: str) -> str:
    return t("learn.progress", lang, done=sum(1 for c in CHAPTERS if c.id in done), total=len(CHAPTERS))


def chapter_text(chapter: Chapter, lang: str) -> str:
    """The chapter's title, paragraphs and formula (Markdown with LaTeX), from the locale files."""
    return f"## {t(f'learn.{chapter.id}.title', lang)}\n\n{t(f'learn.{chapter.id}.body', lang)}"


def task_text(chapter: Chapter, lang: str) -> str:
    key = f"learn.{chapter.id}.task" if chapter.task else "learn.read_only"
    return f"**{t('learn.try_this', lang)}** {t(key, lang)}"


def run_note(result: GenerationResult | None, lang: str) -> str:
    """Which run the views show: the learner's last one, named by its id, model and prompt."""
    if result is None:
        return t("learn.no_run", lang)
    prompt = " ".join(result.prompt.split())
    return t("learn.run_note", lang, run=f"#{result.run_id}" if result.run_id is not None else "—", model=result.info.model,
             prompt=(prompt[:60] + "…") if len(prompt) > 60 else prompt, tokens=len(result.prompt_tokens) + len(result.tokens))


def tokens_html(result: GenerationResult, lang: str) -> str:
    """The token view of the run (render.py's), headed by how many characters became how many tokens."""
    summary = t("learn.tokens_summary", lang, chars=len(result.prompt), tokens=len(result.prompt_tokens),
                new=len(result.tokens))
    return f'<p class="learn-summary">{escape(summary)}</p>' + token_view_html(result, "prob", lang=lang)


def build_learn_tab(playground: Playground, last_result: gr.State, tabs: gr.Tabs, tab: gr.Tab) -> None:
    """Lay out the tab; `last_result` is the learner's run (the Generate tab's last one, or one opened from History)."""
    store = playground.history
    attention = gr.State(None)  # (run_key, RunAttention) of the run last shown, computed once per run

    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=240):
            progress = gr.Markdown(progress_text({}, "en"), elem_id="learn-progress")
            chapter = gr.Radio(chapter_choices({}, "en"), value=CHAPTERS[0].id, label=translated("learn.chapters"),
                               elem_id="learn-chapter")
        with gr.Column(scale=4, min_width=400):
            text = gr.Markdown(chapter_text(CHAPTERS[0], "en"), elem_id="learn-text",
                               latex_delimiters=[{"left": "$$", "right": "$$", "display": True},
                                                 {"left": "$", "right": "$", "display": False}])
            note = gr.Markdown(run_note(None, "en"), elem_id="learn-run")
            # Hidden as "hidden" (in the page, not shown), not False: Gradio 6.17 did not show again the controls and
            # views built with visible=False here (nor Columns holding them) when a chapter's update asked for them.
            with gr.Row():
                position = gr.Dropdown([], label=translated("inside.position"), visible="hidden", elem_id="learn-position")
                layer = gr.Dropdown([("0", 0)], value=0, label=translated("attention.layer"), visible="hidden", elem_id="learn-layer")
                head = gr.Dropdown([("0", 0)], value=0, label=translated("attention.head"), visible="hidden", elem_id="learn-head")
            view_html = gr.HTML(elem_id="learn-view-html")
            view_md = gr.Markdown(elem_id="learn-view-md")
            view_plot = gr.Plot(visible="hidden", show_label=False, elem_id="learn-view-plot")
            view_image = gr.Image(visible="hidden", type="filepath", interactive=False, show_label=False, elem_id="learn-view-image")
            view_code = gr.Code(visible="hidden", language="shell", interactive=False, elem_id="learn-view-code")
            task = gr.Markdown(task_text(CHAPTERS[0], "en"), elem_id="learn-task")
            with gr.Row():
                check_btn = gr.Button(translated("learn.check"), variant="primary", elem_id="learn-check")
                read_btn = gr.Button(translated("learn.mark_read"), visible="hidden", elem_id="learn-read")
                open_btn = gr.Button(translated("learn.open_tab"), elem_id="learn-open-tab")
                next_btn = gr.Button(translated("learn.next"), elem_id="learn-next")
            verdict = gr.Markdown(elem_id="learn-verdict")

    def owner_of(request: gr.Request | None) -> str:
        """Whose path this is: the logged-in user's own (an admin's too), the local user's without a login."""
        return (request.username if request else None) or LOCAL_OWNER

    def learned(request: gr.Request | None) -> dict[str, str]:
        return store.learned(owner_of(request)) if store is not None else {}

    def attention_of(result: GenerationResult, cached) -> tuple[tuple, RunAttention]:
        key = run_key(result)
        if cached is not None and cached[0] == key:
            return cached
        backend = playground.analysis_backend(result.info.backend, result.info.variant, result.info.model)
        ids = [record.token_id for record in result.prompt_tokens + result.tokens]
        return key, compute_attention(backend, ids, playground.source_for(result.info.model).codec)

    def views(chapter_id: str, result: GenerationResult | None, position_choice, layer_i, head_i, cached, lang: str,
              request: gr.Request | None, fresh: bool):
        """Values for the controls and the live views of `chapter_id` on `result`. `fresh`: the chapter or the run just
        changed, so the controls are set again (the first output position, layer 0, head 0)."""
        c = BY_ID[chapter_id]
        controls = [{}, {}, {}]  # position, layer, head: what changes besides whether they are shown
        html, md, plot, image, code = "", "", None, None, None
        if result is None:
            html = f'<p class="learn-summary">{escape(t("learn.no_run", lang))}</p>' if c.view else ""
            return (*shown_or_hidden(controls, set(), None, None, None), html, md, cached)
        try:
            if c.view == "tokens":
                html = tokens_html(result, lang)
            elif c.view == "surprisal":
                plot = surprisal_figure(result, lang)
            elif c.view == "code":
                notes, _, curl, _ = code_values(playground, [result], lang, request)
                html, code = notes, curl
            elif c.view in INSIDE_VIEWS:
                view = playground.inside(result)
                choices, default = position_choices(view, lang)
                if fresh or position_choice not in choices:
                    position_choice = default
                controls[0] = dict(choices=choices, value=position_choice)
                report = view.report(_choice_position(position_choice))
                if c.view == "embedding":
                    plot = embedding_figure(report, view, lang)
                elif c.view == "residual":
                    plot = residual_figure(report, lang)
                elif c.view == "lens":
                    plot, html = lens_figure(report, view, lang), lens_table(report, lang)
                elif c.view == "funnel":
                    plot, html = funnel_figure(report, lang), funnel_table(report, view.codec, lang)
                else:  # kv
                    md = kv_markdown(report, lang)
            elif c.view in ATTENTION_VIEWS:
                cached = attention_of(result, cached)
                run = cached[1]
                layer_i = 0 if fresh or layer_i is None or int(layer_i) >= run.n_layers else int(layer_i)
                head_i = 0 if fresh or head_i is None or int(head_i) >= run.n_heads else int(head_i)
                controls[1] = dict(choices=[(str(i), i) for i in range(run.n_layers)], value=layer_i)
                controls[2] = dict(choices=[(str(i), i) for i in range(run.n_heads)], value=head_i)
                if c.view == "attention":
                    plot = localized_heatmap(run, layer_i, head_i, None, lang)
                else:
                    image = heads_picture(run, layer_i, lang)
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        shown = {"position"} if c.view in INSIDE_VIEWS else {"layer", "head"} if c.view in ATTENTION_VIEWS else set()
        return (*shown_or_hidden(controls, shown, plot, image, code), html, md, cached)

    def shown_or_hidden(controls: list[dict], shown: set[str], plot, image, code) -> list:
        """Updates of the three controls and the plot, image and code views: shown with their values, or hidden."""
        updates = [gr.update(**values, visible=True) if name in shown else gr.update(visible="hidden")
                   for name, values in zip(("position", "layer", "head"), controls)]
        return updates + [gr.update(value=value, visible=True) if value is not None else gr.update(visible="hidden")
                          for value in (plot, image, code)]

    view_outputs = [position, layer, head, view_plot, view_image, view_code, view_html, view_md, attention]

    def show(chapter_id: str, result: GenerationResult | None, position_choice, layer_i, head_i, cached, request: gr.Request):
        """The whole chapter: text, task, buttons, and its live view on the learner's run."""
        lang = lang_of(request)
        c = BY_ID[chapter_id]
        return (chapter_text(c, lang), run_note(result, lang), task_text(c, lang),
                gr.update(visible=True if c.task is not None else "hidden"), gr.update(visible=True if c.task is None else "hidden"), "",
                *views(chapter_id, result, position_choice, layer_i, head_i, cached, lang, request, True))

    def redraw(chapter_id, result, position_choice, layer_i, head_i, cached, request: gr.Request):
        return views(chapter_id, result, position_choice, layer_i, head_i, cached, lang_of(request), request, False)

    def samples_of(result: GenerationResult, request: gr.Request | None) -> list[list[int]]:
        """The token ids of every sample of the run's batch, read back from the learner's own history."""
        if result.group_id is None or store is None:
            return [[record.token_id for record in result.tokens]]
        rows = store.group(result.group_id, full=True, owner=playground.viewer(request.username if request else None))
        return [[record["token_id"] for record in (row.get("tokens") or {}).get("output", [])] for row in rows]

    def verdict_of(c: Chapter, result: GenerationResult, position_choice, layer_i, head_i, cached, request) -> checks.Verdict:
        if c.task == "split_word":
            return checks.split_word(result)
        if c.task == "not_top":
            return checks.not_top_choice(result)
        if c.task == "identical":
            return checks.identical_samples(samples_of(result, request))
        if c.task in ("previous_head", "first_head"):
            run = attention_of(result, cached)[1]
            check = checks.previous_token_head if c.task == "previous_head" else checks.first_token_head
            return check(run.weights, int(layer_i or 0), int(head_i or 0))
        if c.task == "lens":
            view = playground.inside(result)
            report = view.report(_choice_position(position_choice or position_choices(view, "en")[1]))
            return checks.early_prediction(report["logit_lens"], view.record(report["position"]))
        raise AssertionError(f"no check for task {c.task!r}")

    def check(chapter_id, result, position_choice, layer_i, head_i, cached, request: gr.Request):
        lang = lang_of(request)
        c = BY_ID[chapter_id]
        if result is None:
            return f"⚠️ {t('learn.no_run', lang)}", gr.skip(), gr.skip()
        try:
            found = verdict_of(c, result, position_choice, layer_i, head_i, cached, request)
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        params = {k: escape(str(v)) for k, v in found.params.items()}
        message = ("✅ " if found.met else "⏳ ") + t(found.key, lang, **params)
        if found.met and store is not None:
            store.mark_learned(chapter_id, {"run_id": result.run_id, "verdict": found.key, "params": found.params},
                               owner_of(request))
            message += " " + t("learn.saved", lang)
        done = learned(request)
        return message, gr.update(choices=chapter_choices(done, lang)), progress_text(done, lang)

    def mark_read(chapter_id, request: gr.Request):
        lang = lang_of(request)
        if store is None:
            return t("learn.no_history", lang), gr.skip(), gr.skip()
        store.mark_learned(chapter_id, {"read": True}, owner_of(request))
        done = learned(request)
        return "✅ " + t("learn.read_saved", lang), gr.update(choices=chapter_choices(done, lang)), progress_text(done, lang)

    def next_chapter(chapter_id: str):
        ids = [c.id for c in CHAPTERS]
        return ids[min(ids.index(chapter_id) + 1, len(ids) - 1)]

    localize_on_load([progress, chapter, text, note, task], lambda lang, request: (
        progress_text(learned(request), lang), gr.update(choices=chapter_choices(learned(request), lang)),
        chapter_text(CHAPTERS[0], lang), run_note(None, lang), task_text(CHAPTERS[0], lang)), with_request=True)

    inputs = [chapter, last_result, position, layer, head, attention]
    shown = dict(fn=show, inputs=inputs, outputs=[text, note, task, check_btn, read_btn, verdict, *view_outputs],
                 api_visibility="private")
    chapter.change(**shown)
    tab.select(**shown)  # not on every new run: the views are drawn when the learner looks
    for control in (position, layer, head):
        control.input(redraw, inputs=inputs, outputs=view_outputs, api_visibility="private")
    check_btn.click(check, inputs=inputs, outputs=[verdict, chapter, progress], show_progress="hidden", api_visibility="private")
    read_btn.click(mark_read, inputs=[chapter], outputs=[verdict, chapter, progress], show_progress="hidden",
                   api_visibility="private")
    open_btn.click(lambda chapter_id: gr.Tabs(selected=BY_ID[chapter_id].tab), inputs=[chapter], outputs=[tabs],
                   api_visibility="private")
    next_btn.click(next_chapter, inputs=[chapter], outputs=[chapter], queue=False, api_visibility="private")
