"""The Generate tab: prompt and settings in, streamed text and a token-probability view out."""

from __future__ import annotations

import time
from urllib.parse import urlparse

import gradio as gr

from ..config import GenerationSettings
from ..errors import PlaygroundError
from ..onnx.export import VARIANTS
from ..generation import MAX_SAMPLES, GenerationResult
from ..service import Playground
from ..text import hex_bytes, is_whole, unit_labels, visible_label
from .i18n import error, info, lang_of, localize_on_load, t, translated, ui_error
from .render import legend_html, pct, samples_html, stats_markdown, surprisal_figure, token_view_html

# The order of the settings components, as settings_from_ui takes them.
SETTING_NAMES = ("max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "typical_p", "repetition_penalty",
                 "no_repeat_ngram_size", "stop_sequences", "seed", "top_alternatives")
RENDER_EVERY_S = 0.12  # re-render the token view at most this often while streaming
EXAMPLE_PROMPT = "The return value of a function is"


def settings_from_ui(max_new_tokens, do_sample, temperature, top_k, top_p, typical_p, repetition_penalty,
                     no_repeat_ngram_size, stop_sequences, seed, top_alternatives, lang: str = "en") -> GenerationSettings:
    """UI values -> validated settings; raises gr.Error with the validation message in `lang`."""
    try:
        return GenerationSettings.from_user(
            max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
            typical_p=typical_p, repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
            stop_sequences=stop_sequences or "", seed=(seed.strip() or None) if isinstance(seed, str) else seed,
            top_alternatives=top_alternatives,
        )
    except PlaygroundError as exc:
        raise ui_error(exc, lang) from None


def colour_choices(lang: str) -> list[tuple[str, str]]:
    """The colour modes, named in `lang` (Gradio does not translate choice labels in the browser)."""
    return [(t("generate.colour_prob", lang), "prob"), (t("generate.colour_rank", lang), "rank")]


def backend_choices(playground: Playground) -> list[tuple[str, str]]:
    """The backend radio's choices; a serving engine (--remote-url) is named by the protocol and its address, the
    same in every language, like PyTorch and ONNX Runtime."""
    names = {"torch": "PyTorch", "onnx": "ONNX Runtime"}
    return [(names.get(b) or f"OpenAI API · {urlparse(playground.remote_url).netloc}", b) for b in playground.backend_choices()]


def build_generate_tab(playground: Playground) -> tuple[dict[str, gr.components.Component], gr.State]:
    """Lay out the tab and wire its events; call inside a gr.Blocks context.

    Returns the prompt, backend, variant and settings components by name, for other tabs to fill
    (the History tab's "Use these settings"), and the state holding the last finished run (for the
    Attention tab).
    """
    context = playground.backend().info.context_length
    defaults = GenerationSettings()
    last_result = gr.State(None)  # the finished GenerationResult, for re-colouring without regenerating

    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            prompt = gr.Textbox(label=translated("generate.prompt"), value=EXAMPLE_PROMPT, lines=5, max_lines=20, elem_id="prompt")
            model = gr.Dropdown(playground.model_choices(), value=playground.source.name, label=translated("generate.model"),
                                allow_custom_value=True, elem_id="model",
                                info=translated("generate.model_info"))
            with gr.Row():
                backend = gr.Radio(backend_choices(playground), value=playground.default_backend,
                                   label=translated("generate.backend"), elem_id="backend")
                variant = gr.Dropdown(list(VARIANTS), value=playground.default_variant, label=translated("generate.variant"),
                                      interactive=playground.default_backend == "onnx", elem_id="variant",
                                      info=translated("generate.variant_info"))
            with gr.Row():
                generate_btn = gr.Button(translated("generate.generate"), variant="primary", elem_id="generate-btn")
                stop_btn = gr.Button(translated("generate.stop"), variant="stop", elem_id="stop-btn")
            # Default to at most half the context, so a small model's prompt is not squeezed out.
            max_new_tokens = gr.Slider(1, context - 1, value=min(defaults.max_new_tokens, context // 2), step=1,
                                       label=translated("generate.max_new_tokens"), elem_id="max-new-tokens")
            do_sample = gr.Checkbox(value=defaults.do_sample, label=translated("generate.do_sample"))
            with gr.Row():
                temperature = gr.Slider(0.01, 3.0, value=defaults.temperature, step=0.01, label=translated("generate.temperature"))
                top_k = gr.Slider(0, 200, value=defaults.top_k, step=1, label=translated("generate.top_k"))
            with gr.Row():
                top_p = gr.Slider(0.01, 1.0, value=defaults.top_p, step=0.01, label=translated("generate.top_p"))
                # A Textbox, not gr.Number: Number turns "empty" into 0, and empty must mean "random".
                seed = gr.Textbox(value="", label=translated("generate.seed"), max_lines=1, elem_id="seed")
            num_samples = gr.Slider(1, MAX_SAMPLES, value=1, step=1, label=translated("generate.samples"),
                                    info=translated("generate.samples_info"), elem_id="samples")
            with gr.Accordion(translated("generate.advanced"), open=False):
                typical_p = gr.Slider(0.01, 1.0, value=defaults.typical_p, step=0.01, label=translated("generate.typical_p"))
                repetition_penalty = gr.Slider(0.5, 3.0, value=defaults.repetition_penalty, step=0.05,
                                               label=translated("generate.repetition_penalty"))
                no_repeat_ngram_size = gr.Slider(0, 10, value=defaults.no_repeat_ngram_size, step=1,
                                                 label=translated("generate.no_repeat_ngram_size"))
                stop_sequences = gr.Textbox(label=translated("generate.stop_sequences"), lines=2)
                top_alternatives = gr.Slider(1, 50, value=defaults.top_alternatives, step=1, label=translated("generate.top_alternatives"))
        with gr.Column(scale=3, min_width=400):
            output = gr.Textbox(label=translated("generate.output"), lines=8, max_lines=30, interactive=False, elem_id="output")
            stats = gr.Markdown(elem_id="stats")
            # N samples: their cards side by side, and which one the views below (and the other tabs) show.
            open_sample = gr.Radio([], label=translated("generate.open_sample"), info=translated("generate.open_sample_info"),
                                   visible=False, elem_id="open-sample")
            samples_view = gr.HTML("", elem_id="samples-view")
            batch_results = gr.State([])  # every sample of the last batch (empty for a run of one)
            colour_mode = gr.Radio(colour_choices("en"), value="prob", label=translated("generate.colour_by"))
            legend = gr.HTML(legend_html("prob"))
            token_view = gr.HTML(token_view_html(None), elem_id="token-view")
            surprisal = gr.Plot(surprisal_figure(None), elem_id="surprisal")
            with gr.Accordion(translated("generate.branch"), open=False):
                gr.Markdown(translated("generate.branch_help"))
                with gr.Row():
                    branch_token = gr.Dropdown([], label=translated("generate.branch_token"), scale=2, elem_id="branch-token")
                    branch_alternative = gr.Dropdown([], label=translated("generate.branch_alternative"), scale=2, elem_id="branch-alternative")
                    branch_btn = gr.Button(translated("generate.branch_button"), scale=1, elem_id="branch-btn")
            with gr.Accordion(translated("generate.records"), open=False):
                records = gr.JSON(elem_id="records")

    localize_on_load([colour_mode, legend, token_view, surprisal], lambda lang: (
        gr.update(choices=colour_choices(lang)), legend_html("prob", lang), token_view_html(None, lang=lang), surprisal_figure(None, lang)))

    setting_inputs = [max_new_tokens, do_sample, temperature, top_k, top_p, typical_p, repetition_penalty,
                      no_repeat_ngram_size, stop_sequences, seed, top_alternatives]

    def on_generate(prompt_text, model_name, backend_name, variant_name, max_new_tokens, do_sample, temperature, top_k, top_p, typical_p, repetition_penalty,
                    no_repeat_ngram_size, stop_sequences, seed, top_alternatives, samples, mode, request: gr.Request,
                    progress=gr.Progress(track_tqdm=True)):
        lang = lang_of(request)
        settings = settings_from_ui(max_new_tokens, do_sample, temperature, top_k, top_p, typical_p, repetition_penalty,
                                    no_repeat_ngram_size, stop_sequences, seed, top_alternatives, lang)
        session = request.session_hash if request else None
        try:
            # The first use of an ONNX variant exports it; its tqdm bar shows up as progress here.
            run = playground.start(prompt_text, settings, session=session, backend=backend_name, variant=variant_name,
                                   model=model_name, num_samples=samples)
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        yield from stream_to_ui(run, session, mode, lang)

    def stream_to_ui(run, session, mode, lang="en"):
        """Stream a run into the output components (re-rendering at most every RENDER_EVERY_S), then the final views."""
        many = run.num_samples > 1
        try:
            last_render = 0.0
            for _ in playground.stream(run, session):
                now = time.perf_counter()
                if now - last_render >= RENDER_EVERY_S:
                    last_render = now
                    yield (run.current_text(), stats_markdown(run.result, running=True, lang=lang), token_view_html(run.result, mode, lang=lang),
                           gr.skip(), gr.skip(), gr.skip(),
                           samples_html(run.results, mode, running=True, lang=lang) if many else "", gr.skip(), gr.skip())
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        result = run.result
        choices = [(t("samples.title", lang, index=i, seed=r.settings.seed), i) for i, r in enumerate(run.results)]
        yield (result.text, stats_markdown(result, lang=lang), token_view_html(result, mode, lang=lang), result.to_dict(), result,
               surprisal_figure(result, lang), samples_html(run.results, mode, 0, lang=lang),
               gr.update(choices=choices if many else [], value=0 if many else None, visible=many), run.results if many else [])

    def on_open_sample(index, results: list[GenerationResult], mode: str, request: gr.Request):
        """Show sample `index` of the last batch in the main views and make it the last result the other tabs read."""
        if index is None or not results or not 0 <= int(index) < len(results):
            return (gr.skip(),) * 7
        lang = lang_of(request)
        result = results[int(index)]
        return (result.text, stats_markdown(result, lang=lang), token_view_html(result, mode, lang=lang), result.to_dict(), result,
                surprisal_figure(result, lang), samples_html(results, mode, int(index), lang=lang))

    def on_branch(parent: GenerationResult | None, token_choice: str | None, alternative_choice: str | None, mode: str,
                  request: gr.Request):
        if parent is None or not token_choice or not alternative_choice:
            raise error("generate.branch_pick", lang_of(request))
        session = request.session_hash if request else None
        token_index, alternative_id = int(token_choice.split(":", 1)[0]), int(alternative_choice.split(":", 1)[0])
        try:
            run = playground.branch(parent, token_index, alternative_id, session=session)
        except PlaygroundError as exc:
            raise ui_error(exc, request) from None
        yield from stream_to_ui(run, session, mode, lang_of(request))

    def branch_tokens(result: GenerationResult | None):
        """One choice per generated token, named by the character it spells: `5: 注(2/3)` is the 2nd of 3 tokens of 注."""
        if not result:
            return gr.update(choices=[], value=None), gr.update(choices=[], value=None)
        records = result.prompt_tokens + result.tokens
        names = unit_labels([r.bytes for r in records])[len(result.prompt_tokens):]
        choices = [f"{i}: {visible_label(name if t.bytes else t.text)}" for i, (t, name) in enumerate(zip(result.tokens, names))]
        return gr.update(choices=choices, value=None), gr.update(choices=[], value=None)

    def branch_alternatives(result: GenerationResult | None, token_choice: str | None):
        """The token's alternatives; one that is only the first bytes of a character shows them and the character
        the model would most likely complete it to."""
        if result is None or not token_choice:
            return gr.update(choices=[], value=None)
        index = int(token_choice.split(":", 1)[0])
        record = result.tokens[index]
        choices = []
        for alt in record.top:
            if alt.token_id == record.token_id:
                continue
            name = visible_label(alt.text)
            if alt.bytes and not is_whole(alt.bytes):
                try:
                    completed = playground.completion_of(result, index, alt.token_id)
                except PlaygroundError:
                    completed = None
                name = f"{hex_bytes(alt.bytes)} → {completed}…" if completed else f"{hex_bytes(alt.bytes)} …"
            choices.append(f"{alt.token_id}: {name} ({pct(alt.prob)})")
        return gr.update(choices=choices, value=choices[0] if choices else None)

    def on_stop(request: gr.Request):
        if not playground.stop(request.session_hash if request else None):
            info("generate.nothing_running", lang_of(request))

    def on_model(model_name: str, current_max: float):
        """Fit the max-new-tokens slider to the chosen model's context (a bad choice is reported at Generate)."""
        try:
            context = playground.context_length(model_name)
        except (PlaygroundError, OSError):
            return gr.skip()
        return gr.update(maximum=context - 1, value=min(int(current_max), context - 1))

    def on_colour(mode: str, result: GenerationResult | None, request: gr.Request):
        lang = lang_of(request)
        return legend_html(mode, lang), token_view_html(result, mode, lang=lang)

    run_outputs = [output, stats, token_view, records, last_result, surprisal, samples_view, open_sample, batch_results]
    generate_btn.click(
        on_generate,
        inputs=[prompt, model, backend, variant, *setting_inputs, num_samples, colour_mode],
        outputs=run_outputs,
        api_visibility="private",
        concurrency_id="generate",
    )
    last_result.change(branch_tokens, inputs=[last_result], outputs=[branch_token, branch_alternative], queue=False,
                       api_visibility="private")
    branch_token.input(branch_alternatives, inputs=[last_result, branch_token], outputs=[branch_alternative], queue=False,
                       api_visibility="private")
    branch_btn.click(on_branch, inputs=[last_result, branch_token, branch_alternative, colour_mode],
                     outputs=run_outputs, api_visibility="private", concurrency_id="generate")
    open_sample.input(on_open_sample, inputs=[open_sample, batch_results, colour_mode],
                      outputs=[output, stats, token_view, records, last_result, surprisal, samples_view], queue=False,
                      api_visibility="private")
    inputs_by_name = dict(zip(SETTING_NAMES, setting_inputs)) | {"prompt": prompt, "model": model, "backend": backend, "variant": variant}
    stop_btn.click(on_stop, inputs=None, outputs=None, queue=False, api_visibility="private")
    model.change(on_model, inputs=[model, max_new_tokens], outputs=max_new_tokens, api_visibility="private")
    # Model folders appear while the app runs (a fine-tuned model): offer them whenever the list is opened.
    model.focus(lambda: gr.update(choices=playground.model_choices()), outputs=model, queue=False, api_visibility="private")
    backend.change(lambda b: gr.update(interactive=b == "onnx"), inputs=backend, outputs=variant, queue=False, api_visibility="private")
    colour_mode.change(on_colour, inputs=[colour_mode, last_result], outputs=[legend, token_view], queue=False, api_visibility="private")
    return inputs_by_name, last_result
