"""The Step-by-step tab (单步): the model one token at a time, on the Generate tab's prompt and settings (playground.steps)."""

from __future__ import annotations

import gradio as gr

from ..config import SETTING_NAMES
from ..errors import PlaygroundError
from ..service import Playground
from ..steps import STEP_CHOICES, Step, StepRun, preview, save_steps, start_steps, token_of_text
from ..text import visible_label
from .generate_tab import settings_from_ui
from .i18n import error, lang_of, t, translated, ui_error
from .inside_html import funnel_table
from .inside_tab import funnel_figure
from .render import pct, token_view_html


def status_text(step: Step, lang: str) -> str:
    run = step.run
    if step.next is None:
        return t(f"steps.ended.{step.ended}", lang, step=run.step)
    return t("steps.status", lang, step=run.step + 1, most=run.settings.max_new_tokens, token=f"`{visible_label(step.next.text)}`",
             prob=pct(step.next.prob), raw=pct(step.next.raw_prob), by_hand=sum(run.by_hand))


def choices_of(step: Step, lang: str) -> list[tuple[str, int]]:
    """The next token's candidates, most likely first, by the model's own probabilities."""
    if step.next is None:
        return []
    return [(t("steps.pick_label", lang, token=visible_label(a.text), prob=pct(a.prob)), a.token_id)
            for a in step.next.top[:STEP_CHOICES]]


def by_hand_positions(step: Step) -> frozenset[int]:
    """The sequence positions of the tokens picked by hand (outlined in the token view)."""
    first = len(step.result.prompt_tokens)
    return frozenset(first + i for i, by_hand in enumerate(step.run.by_hand) if by_hand)


def build_steps_tab(playground: Playground, generate_inputs: dict, last_result: gr.State) -> None:
    """Lay out the tab and wire its events; call inside a gr.Blocks context. `generate_inputs`: the Generate tab's
    components by name (prompt, model, backend, variant and every setting), which a step run starts from; a saved run
    becomes `last_result`, which the other tabs read."""
    gr.Markdown(translated("steps.title"))
    gr.Markdown(translated("steps.help"))
    with gr.Row():
        start_btn = gr.Button(translated("steps.start"), variant="primary", elem_id="steps-start")
        sample_btn = gr.Button(translated("steps.sample"), elem_id="steps-sample")
        undo_btn = gr.Button(translated("steps.undo"), elem_id="steps-undo")
        save_btn = gr.Button(translated("steps.save"), elem_id="steps-save")
    status = gr.Markdown(elem_id="steps-status")
    so_far = gr.HTML(elem_id="steps-so-far")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300):
            choices = gr.Radio([], label=translated("steps.choices"), elem_id="steps-choices")
            with gr.Row():
                typed = gr.Textbox(label=translated("steps.type"), max_lines=1, scale=3, elem_id="steps-typed")
                type_btn = gr.Button(translated("steps.type_pick"), scale=1, elem_id="steps-type-pick")
        with gr.Column(scale=3, min_width=400):
            funnel_plot = gr.Plot(elem_id="steps-funnel")
            funnel_html = gr.HTML(elem_id="steps-funnel-table")
    # The run being made (steps.StepRun) and the sampler's pick for its next step (a token id, or None when it ended).
    state = gr.State(None)
    views = [state, status, so_far, choices, funnel_plot, funnel_html]

    def shown(run: StepRun, request: gr.Request):
        """The views of `run`'s next step (the loop runs it: playground.steps.preview)."""
        lang = lang_of(request)
        try:
            step = preview(playground, run, owner=request.username or "")
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        report = {"funnel": step.funnel, "token": {"text": step.next.text}} if step.next is not None else None
        codec = playground.source_for(run.model).codec
        return ((run, step.next.token_id if step.next is not None else None), status_text(step, lang),
                token_view_html(step.so_far, "prob", mark_position=by_hand_positions(step), lang=lang),
                gr.update(choices=choices_of(step, lang), value=None),
                funnel_figure(report, lang) if report else None, funnel_table(report, codec, lang) if report else "")

    def going(held, request: gr.Request) -> tuple[StepRun, int | None]:
        if held is None:
            raise error("steps.start_first", lang_of(request))
        return held

    def on_start(request: gr.Request, prompt, model, backend, variant, *setting_values):
        # Gradio fills `request` only before *setting_values (the Generate tab's settings, in SETTING_NAMES order).
        lang = lang_of(request)
        settings = settings_from_ui(dict(zip(SETTING_NAMES, setting_values)), lang)
        try:
            run = start_steps(playground, prompt, settings, model=model, backend=backend, variant=variant)
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        return shown(run, request)

    def on_pick(held, token_id, request: gr.Request):
        run, _ = going(held, request)
        if token_id is None:
            return (gr.skip(),) * len(views)
        return shown(run.pick(int(token_id), by_hand=True), request)

    def on_sample(held, request: gr.Request):
        run, sampled = going(held, request)
        if sampled is None:  # the text has ended: nothing to draw
            return (gr.skip(),) * len(views)
        return shown(run.pick(sampled, by_hand=False), request)

    def on_type(held, text: str, request: gr.Request):
        run, sampled = going(held, request)
        if sampled is None:
            return (gr.skip(),) * len(views)
        try:
            token_id = token_of_text(playground.source_for(run.model).codec, text or "")
        except PlaygroundError as exc:
            raise ui_error(exc, request) from None
        return shown(run.pick(token_id, by_hand=True), request)

    def on_undo(held, request: gr.Request):
        run, _ = going(held, request)
        return shown(run.undo(), request)

    def on_save(held, request: gr.Request):
        run, _ = going(held, request)
        lang = lang_of(request)
        try:
            result = save_steps(playground, run, session=request.session_hash, owner=request.username or "")
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        return t("steps.saved", lang, run_id=result.run_id), result

    events = dict(api_visibility="private", concurrency_id="generate", concurrency_limit=playground.runs_at_once)
    start_btn.click(on_start, inputs=[generate_inputs[name] for name in ("prompt", "model", "backend", "variant", *SETTING_NAMES)],
                    outputs=views, **events)
    choices.input(on_pick, inputs=[state, choices], outputs=views, **events)
    sample_btn.click(on_sample, inputs=[state], outputs=views, **events)
    type_btn.click(on_type, inputs=[state, typed], outputs=views, **events)
    typed.submit(on_type, inputs=[state, typed], outputs=views, **events)
    undo_btn.click(on_undo, inputs=[state], outputs=views, **events)
    save_btn.click(on_save, inputs=[state], outputs=[status, last_result], **events)
