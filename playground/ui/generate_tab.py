"""The Generate tab: prompt and settings in, streamed text and a token-probability view out."""

from __future__ import annotations

import time

import gradio as gr

from ..config import GenerationSettings
from ..errors import PlaygroundError
from ..export import VARIANTS
from ..generation import GenerationResult
from ..service import Playground
from .render import legend_html, stats_markdown, surprisal_figure, token_view_html

# The order of the settings components, as settings_from_ui takes them.
SETTING_NAMES = ("max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "typical_p", "repetition_penalty",
                 "no_repeat_ngram_size", "stop_sequences", "seed", "top_alternatives")
RENDER_EVERY_S = 0.12  # re-render the token view at most this often while streaming
EXAMPLE_PROMPT = "The return value of a function is"


def settings_from_ui(max_new_tokens, do_sample, temperature, top_k, top_p, typical_p, repetition_penalty,
                     no_repeat_ngram_size, stop_sequences, seed, top_alternatives) -> GenerationSettings:
    """UI values -> validated settings; raises gr.Error with the validation message."""
    try:
        return GenerationSettings.from_user(
            max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
            typical_p=typical_p, repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
            stop_sequences=stop_sequences or "", seed=(seed.strip() or None) if isinstance(seed, str) else seed,
            top_alternatives=top_alternatives,
        )
    except PlaygroundError as exc:
        raise gr.Error(str(exc)) from None


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
            prompt = gr.Textbox(label="Prompt", value=EXAMPLE_PROMPT, lines=5, max_lines=20, elem_id="prompt")
            model = gr.Dropdown(playground.model_choices(), value=playground.source.name, label="Model",
                                allow_custom_value=True, elem_id="model",
                                info="the models/ folder, or type a hub id (e.g. distilgpt2)")
            with gr.Row():
                backend = gr.Radio([("PyTorch", "torch"), ("ONNX Runtime", "onnx")], value=playground.default_backend,
                                   label="Backend", elem_id="backend")
                variant = gr.Dropdown(list(VARIANTS), value=playground.default_variant, label="ONNX variant",
                                      interactive=playground.default_backend == "onnx", elem_id="variant",
                                      info="fp16 needs a GPU; int8 runs on the CPU")
            with gr.Row():
                generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn")
                stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn")
            # Default to at most half the context, so a small model's prompt is not squeezed out.
            max_new_tokens = gr.Slider(1, context - 1, value=min(defaults.max_new_tokens, context // 2), step=1,
                                       label="Max new tokens", elem_id="max-new-tokens")
            do_sample = gr.Checkbox(value=defaults.do_sample, label="Sample (off = greedy)")
            with gr.Row():
                temperature = gr.Slider(0.01, 3.0, value=defaults.temperature, step=0.01, label="Temperature")
                top_k = gr.Slider(0, 200, value=defaults.top_k, step=1, label="Top-k (0 = off)")
            with gr.Row():
                top_p = gr.Slider(0.01, 1.0, value=defaults.top_p, step=0.01, label="Top-p (1 = off)")
                # A Textbox, not gr.Number: Number turns "empty" into 0, and empty must mean "random".
                seed = gr.Textbox(value="", label="Seed (empty = random)", max_lines=1, elem_id="seed")
            with gr.Accordion("Advanced", open=False):
                typical_p = gr.Slider(0.01, 1.0, value=defaults.typical_p, step=0.01, label="Typical-p (1 = off)")
                repetition_penalty = gr.Slider(0.5, 3.0, value=defaults.repetition_penalty, step=0.05, label="Repetition penalty (1 = off)")
                no_repeat_ngram_size = gr.Slider(0, 10, value=defaults.no_repeat_ngram_size, step=1, label="No-repeat n-gram size (0 = off)")
                stop_sequences = gr.Textbox(label="Stop sequences (one per line; \\n means newline)", lines=2)
                top_alternatives = gr.Slider(1, 50, value=defaults.top_alternatives, step=1, label="Alternatives recorded per token")
        with gr.Column(scale=3, min_width=400):
            output = gr.Textbox(label="Output", lines=8, max_lines=30, interactive=False, elem_id="output")
            stats = gr.Markdown(elem_id="stats")
            colour_mode = gr.Radio([("Probability", "prob"), ("Rank (GLTR)", "rank")], value="prob", label="Colour tokens by")
            legend = gr.HTML(legend_html("prob"))
            token_view = gr.HTML(token_view_html(None), elem_id="token-view")
            surprisal = gr.Plot(surprisal_figure(None), elem_id="surprisal")
            with gr.Accordion("Branch from an alternative", open=False):
                gr.Markdown("Keep the run up to a token, swap that token for one of its alternatives, and continue with the "
                            "same settings, seed and backend. The branch is saved to the history with where it came from.")
                with gr.Row():
                    branch_token = gr.Dropdown([], label="Token of the last run", scale=2, elem_id="branch-token")
                    branch_alternative = gr.Dropdown([], label="Alternative", scale=2, elem_id="branch-alternative")
                    branch_btn = gr.Button("Continue from this alternative", scale=1, elem_id="branch-btn")
            with gr.Accordion("Per-token records (JSON)", open=False):
                records = gr.JSON(elem_id="records")

    setting_inputs = [max_new_tokens, do_sample, temperature, top_k, top_p, typical_p, repetition_penalty,
                      no_repeat_ngram_size, stop_sequences, seed, top_alternatives]

    def on_generate(prompt_text, model_name, backend_name, variant_name, max_new_tokens, do_sample, temperature, top_k, top_p, typical_p, repetition_penalty,
                    no_repeat_ngram_size, stop_sequences, seed, top_alternatives, mode, request: gr.Request,
                    progress=gr.Progress(track_tqdm=True)):
        settings = settings_from_ui(max_new_tokens, do_sample, temperature, top_k, top_p, typical_p, repetition_penalty,
                                    no_repeat_ngram_size, stop_sequences, seed, top_alternatives)
        session = request.session_hash if request else None
        try:
            # The first use of an ONNX variant exports it; its tqdm bar shows up as progress here.
            run = playground.start(prompt_text, settings, session=session, backend=backend_name, variant=variant_name,
                                   model=model_name)
        except PlaygroundError as exc:
            raise gr.Error(str(exc)) from None
        yield from stream_to_ui(run, session, mode)

    def stream_to_ui(run, session, mode):
        """Stream a run into the output components (re-rendering at most every RENDER_EVERY_S), then the final views."""
        try:
            last_render = 0.0
            for _ in playground.stream(run, session):
                now = time.perf_counter()
                if now - last_render >= RENDER_EVERY_S:
                    last_render = now
                    yield (run.current_text(), stats_markdown(run.result, running=True), token_view_html(run.result, mode),
                           gr.skip(), gr.skip(), gr.skip())
        except PlaygroundError as exc:
            raise gr.Error(str(exc)) from None
        result = run.result
        yield result.text, stats_markdown(result), token_view_html(result, mode), result.to_dict(), result, surprisal_figure(result)

    def on_branch(parent: GenerationResult | None, token_choice: str | None, alternative_choice: str | None, mode: str,
                  request: gr.Request):
        if parent is None or not token_choice or not alternative_choice:
            raise gr.Error("Generate something, then pick a token and one of its alternatives.")
        session = request.session_hash if request else None
        token_index, alternative_id = int(token_choice.split(":", 1)[0]), int(alternative_choice.split(":", 1)[0])
        try:
            run = playground.branch(parent, token_index, alternative_id, session=session)
        except PlaygroundError as exc:
            raise gr.Error(str(exc)) from None
        yield from stream_to_ui(run, session, mode)

    def branch_tokens(result: GenerationResult | None):
        choices = [f"{i}: {repr(t.text)[1:-1]}" for i, t in enumerate(result.tokens)] if result else []
        return gr.update(choices=choices, value=None), gr.update(choices=[], value=None)

    def branch_alternatives(result: GenerationResult | None, token_choice: str | None):
        if result is None or not token_choice:
            return gr.update(choices=[], value=None)
        record = result.tokens[int(token_choice.split(":", 1)[0])]
        choices = [f"{tid}: {repr(text)[1:-1]} ({p:.1%})" for tid, text, p in record.top if tid != record.token_id]
        return gr.update(choices=choices, value=choices[0] if choices else None)

    def on_stop(request: gr.Request):
        if not playground.stop(request.session_hash if request else None):
            gr.Info("Nothing is running.")

    def on_model(model_name: str, current_max: float):
        """Fit the max-new-tokens slider to the chosen model's context (a bad choice is reported at Generate)."""
        try:
            context = playground.context_length(model_name)
        except (PlaygroundError, OSError):
            return gr.skip()
        return gr.update(maximum=context - 1, value=min(int(current_max), context - 1))

    def on_colour(mode: str, result: GenerationResult | None):
        return legend_html(mode), token_view_html(result, mode)

    generate_btn.click(
        on_generate,
        inputs=[prompt, model, backend, variant, *setting_inputs, colour_mode],
        outputs=[output, stats, token_view, records, last_result, surprisal],
        api_visibility="private",
        concurrency_id="generate",
    )
    last_result.change(branch_tokens, inputs=[last_result], outputs=[branch_token, branch_alternative], queue=False,
                       api_visibility="private")
    branch_token.input(branch_alternatives, inputs=[last_result, branch_token], outputs=[branch_alternative], queue=False,
                       api_visibility="private")
    branch_btn.click(on_branch, inputs=[last_result, branch_token, branch_alternative, colour_mode],
                     outputs=[output, stats, token_view, records, last_result, surprisal], api_visibility="private",
                     concurrency_id="generate")
    inputs_by_name = dict(zip(SETTING_NAMES, setting_inputs)) | {"prompt": prompt, "model": model, "backend": backend, "variant": variant}
    stop_btn.click(on_stop, inputs=None, outputs=None, queue=False, api_visibility="private")
    model.change(on_model, inputs=[model, max_new_tokens], outputs=max_new_tokens, api_visibility="private")
    backend.change(lambda b: gr.update(interactive=b == "onnx"), inputs=backend, outputs=variant, queue=False, api_visibility="private")
    colour_mode.change(on_colour, inputs=[colour_mode, last_result], outputs=[legend, token_view], queue=False, api_visibility="private")
    return inputs_by_name, last_result
