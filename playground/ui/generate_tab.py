"""The Generate tab: prompt and settings in, streamed text and a token-probability view out."""

from __future__ import annotations

import json
import tempfile
import time
from functools import lru_cache
from typing import Any
from pathlib import Path
from urllib.parse import urlparse

import gradio as gr

from ..analysis.beam_tree import static_tree
from ..config import EARLY_STOPPING, SETTING_NAMES, SETTING_RANGES, GenerationSettings
from ..errors import PlaygroundError
from ..figures import needs_cjk
from ..onnx.export import VARIANTS
from ..generation import MAX_SAMPLES
from ..records import GenerationResult
from ..service import Playground
from ..text import complete_prefix_length, escape_bytes, hex_bytes, is_whole, unit_labels, visible_label
from .code_view import build_code_view, code_values
from .i18n import LANGUAGES, STOP_EVENT, error, info, lang_of, localize_on_load, t, translated, ui_error
from .render import beam_tree_html, legend_html, pct, samples_html, stats_markdown, surprisal_figure, token_view_html

RENDER_EVERY_S = 0.12  # re-render the token view at most this often while streaming
CHINESE_VOCABULARY_SHARE = 0.2  # uer's Chinese GPT-2: about 2/3 of its 21,128 tokens are CJK; GPT-2's 50,257: under 1%


@lru_cache(maxsize=8)
def model_language(codec) -> str:
    """"zh-CN" for a model whose vocabulary is largely CJK characters (the BertTokenizer vocabulary of uer's Chinese
    GPT-2 and of the Chinese demo, where an English prompt turns into [UNK]s and stray word pieces), else "en"."""
    pieces = (codec.piece(i) for i in range(len(codec)))
    wide = sum(1 for data in pieces if data and needs_cjk([data.decode("utf-8", errors="ignore")]))
    return "zh-CN" if wide >= CHINESE_VOCABULARY_SHARE * len(codec) else "en"


def example_prompt(codec, lang: str) -> str:
    """The prompt a page opens with, in the model's language, so that 生成 at once gives text the model can continue: a
    Chinese example for a Chinese model, an English one for an English model, in either language of the page (`lang`
    is the page's; the model's language wins, as an English demo model turns a Chinese example into byte noise)."""
    return t("generate.example_prompt", model_language(codec))


def follow_model_language(playground: Playground, model: gr.Dropdown, prompt: gr.Textbox) -> None:
    """Let an untouched example prompt follow the language of the model the user picks; call inside the Blocks.

    The server says which example fits the model (loading its tokenizer can take a moment); whether the box still
    holds an example is decided in the browser when that answer arrives, so what the user typed meanwhile stays.
    (`.input`, not `.change`: a run reused from History keeps its own prompt, even when that is an example.)
    """
    example = gr.Textbox(visible=False)
    examples = json.dumps(sorted({t("generate.example_prompt", lang).strip() for lang in LANGUAGES}), ensure_ascii=False)

    def model_example(model_name: str, request: gr.Request) -> str:
        try:
            return example_prompt(playground.source_for(model_name).codec, lang_of(request))
        except (PlaygroundError, OSError, ValueError):  # a bad choice is reported at Generate
            return ""

    model.input(model_example, inputs=model, outputs=example, queue=False, api_visibility="private").then(
        None, inputs=[example, prompt], outputs=prompt, js=f"(example, text) => example && {examples}.includes(text.trim()) ? example : text")


def settings_from_ui(values: dict[str, Any], lang: str = "en") -> GenerationSettings:
    """The settings components' values by setting name -> validated settings; raises gr.Error with the validation
    message in `lang`. An empty seed box means a random seed; the stop box holds one sequence per line."""
    values = dict(values)
    if isinstance(values.get("seed"), str):
        values["seed"] = values["seed"].strip() or None
    values["stop_sequences"] = values.get("stop_sequences") or ""
    try:
        return GenerationSettings.from_user(**values)
    except PlaygroundError as exc:
        raise ui_error(exc, lang) from None


def setting_slider(name: str, maximum: float | None = None, value: Any = None, **kwargs: Any) -> gr.Slider:
    """The slider of a number setting, as GenerationSettings declares it: its span and step, its default, its label."""
    low, high, step = SETTING_RANGES[name].ui
    return gr.Slider(low, maximum if maximum is not None else high, step=step,
                     value=getattr(GenerationSettings(), name) if value is None else value,
                     label=translated(f"generate.{name}"), **kwargs)


def branch_view(parent: GenerationResult, branch: GenerationResult, text: str) -> tuple[str, str]:
    """A branch shown whole, as (prompt box, output box): the prompt it grew from (the parent's), then everything after
    it: the parent's tokens it kept, the swapped-in token and the continuation (`text`, the branch's output so far).

    The branch ran on the parent's prompt tokens and the kept and swapped tokens as its prompt, so its prompt text
    starts with what the parent's prompt tokens spell (for a Chinese model's [CLS] and lower-cased word pieces, that
    is not the prompt as typed): the output box is the rest of its whole text.
    """
    spelled = b"".join(record.bytes for record in parent.prompt_tokens)
    start = escape_bytes(spelled[:complete_prefix_length(spelled)])
    whole = branch.prompt + text
    if not whole.startswith(start):  # not expected; show the branch as it ran rather than a wrong cut
        return branch.prompt, text
    return parent.prompt, whole[len(start):]


def run_view_html(result: GenerationResult | None, mode: str, lang: str) -> str:
    """The token view of a run; a branch's swapped-in token is outlined."""
    return token_view_html(result, mode, mark_position=result.branch_position if result else None, lang=lang)


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
            prompt = gr.Textbox(label=translated("generate.prompt"), value=example_prompt(playground.source.codec, "en"), lines=5,
                                max_lines=20, elem_id="prompt")
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
            max_new_tokens = setting_slider("max_new_tokens", context - 1, min(defaults.max_new_tokens, context // 2),
                                            elem_id="max-new-tokens")
            do_sample = gr.Checkbox(value=defaults.do_sample, label=translated("generate.do_sample"))
            with gr.Row():
                temperature = setting_slider("temperature")
                top_k = setting_slider("top_k")
            with gr.Row():
                top_p = setting_slider("top_p")
                # A Textbox, not gr.Number: Number turns "empty" into 0, and empty must mean "random".
                seed = gr.Textbox(value="", label=translated("generate.seed"), max_lines=1, elem_id="seed")
            num_samples = gr.Slider(1, MAX_SAMPLES, value=1, step=1, label=translated("generate.samples"),
                                    info=translated("generate.samples_info"), elem_id="samples")
            with gr.Accordion(translated("generate.advanced"), open=False):
                # The length controls first: a model that ends its texts early (the Chinese demo) needs them most.
                min_new_tokens = setting_slider("min_new_tokens", context - 1, info=translated("generate.min_new_tokens_info"),
                                                elem_id="min-new-tokens")
                ignore_eos = gr.Checkbox(value=defaults.ignore_eos, label=translated("generate.ignore_eos"),
                                         info=translated("generate.ignore_eos_info"), elem_id="ignore-eos")
                typical_p = setting_slider("typical_p")
                repetition_penalty = setting_slider("repetition_penalty")
                no_repeat_ngram_size = setting_slider("no_repeat_ngram_size")
                stop_sequences = gr.Textbox(label=translated("generate.stop_sequences"), lines=2)
                top_alternatives = setting_slider("top_alternatives")
            with gr.Accordion(translated("generate.strategy"), open=False, elem_id="strategy"):
                with gr.Row():
                    num_beams = setting_slider("num_beams", info=translated("generate.num_beams_info"), elem_id="num-beams")
                    length_penalty = setting_slider("length_penalty", info=translated("generate.length_penalty_info"))
                early_stopping = gr.Radio([(str(v).lower(), str(v).lower()) for v in EARLY_STOPPING], value="false",
                                          label=translated("generate.early_stopping"),
                                          info=translated("generate.early_stopping_info"), elem_id="early-stopping")
                penalty_alpha = setting_slider("penalty_alpha", info=translated("generate.penalty_alpha_info"), elem_id="penalty-alpha")
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
            with gr.Accordion(translated("generate.beam_tree"), open=False, elem_id="beam-tree"):
                gr.Markdown(translated("generate.beam_tree_help"))
                beam_tree_view = gr.HTML("", elem_id="beam-tree-html")
                with gr.Row():
                    tree_png = gr.Button(translated("generate.beam_tree_png"), size="sm", elem_id="beam-tree-png")
                    tree_svg = gr.Button(translated("generate.beam_tree_svg"), size="sm", elem_id="beam-tree-svg")
                tree_file = gr.File(interactive=False, show_label=False, visible=False, elem_id="beam-tree-file")
            with gr.Accordion(translated("generate.records"), open=False):
                records = gr.JSON(elem_id="records")
            with gr.Accordion(translated("code.title"), open=False, elem_id="generate-code"):
                code_outputs = build_code_view("generate")

    localize_on_load([prompt, colour_mode, legend, token_view, surprisal], lambda lang: (
        example_prompt(playground.source.codec, lang), gr.update(choices=colour_choices(lang)), legend_html("prob", lang),
        token_view_html(None, lang=lang), surprisal_figure(None, lang)))

    setting_controls = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
                            repetition_penalty=repetition_penalty, seed=seed, typical_p=typical_p,
                            no_repeat_ngram_size=no_repeat_ngram_size, stop_sequences=stop_sequences, top_alternatives=top_alternatives,
                            min_new_tokens=min_new_tokens, ignore_eos=ignore_eos,
                            num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping,
                            penalty_alpha=penalty_alpha)
    assert tuple(setting_controls) == SETTING_NAMES, "a control for every generation setting, in the declaration's order"
    setting_inputs = list(setting_controls.values())

    def on_generate(values: dict, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
        """`values`: the inputs' values by component (Gradio passes a dict when the inputs are a set)."""
        lang = lang_of(request)
        settings = settings_from_ui({name: values[control] for name, control in setting_controls.items()}, lang)
        session = request.session_hash if request else None
        try:
            # The first use of an ONNX variant exports it; its tqdm bar shows up as progress here.
            run = playground.start(values[prompt], settings, session=session, backend=values[backend], variant=values[variant],
                                   model=values[model], num_samples=values[num_samples], owner=request.username or "")
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        yield from stream_to_ui(run, session, values[colour_mode], lang)

    def stream_to_ui(run, session, mode, lang="en", shown=lambda text: text):
        """Stream a run into the output components (re-rendering at most every RENDER_EVERY_S), then the final views.
        `shown` turns the run's output text into the output box's (a branch shows the tokens it kept before it)."""
        many = run.num_samples > 1
        # A run of one has no sample cards and no sample picker, from its first token on (a batch's picker and
        # samples are set once it has finished).
        picker = (gr.skip(), gr.skip()) if many else (gr.update(choices=[], value=None, visible=False), [])
        try:
            last_render = 0.0
            for _ in playground.stream(run, session):
                now = time.perf_counter()
                if now - last_render >= RENDER_EVERY_S:
                    last_render = now
                    yield (shown(run.current_text()), stats_markdown(run.result, running=True, lang=lang),
                           run_view_html(run.result, mode, lang), gr.skip(), gr.skip(), gr.skip(),
                           samples_html(run.results, mode, running=True, lang=lang) if many else "", *picker)
                    picker = (gr.skip(), gr.skip())
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        result = run.result
        choices = [(t("samples.title", lang, index=i, seed=r.settings.seed), i) for i, r in enumerate(run.results)]
        yield (shown(result.text), stats_markdown(result, lang=lang), run_view_html(result, mode, lang), result.to_dict(), result,
               surprisal_figure(result, lang), samples_html(run.results, mode, 0, lang=lang),
               gr.update(choices=choices if many else [], value=0 if many else None, visible=many), run.results if many else [])

    def on_open_sample(index, results: list[GenerationResult], mode: str, request: gr.Request):
        """Show sample `index` of the last batch in the main views and make it the last result the other tabs read."""
        if index is None or not results or not 0 <= int(index) < len(results):
            return (gr.skip(),) * 7
        lang = lang_of(request)
        result = results[int(index)]
        return (result.text, stats_markdown(result, lang=lang), run_view_html(result, mode, lang), result.to_dict(), result,
                surprisal_figure(result, lang), samples_html(results, mode, int(index), lang=lang))

    def on_branch(parent: GenerationResult | None, token_choice: str | None, alternative_choice: str | None, mode: str,
                  request: gr.Request):
        if parent is None or not token_choice or not alternative_choice:
            raise error("generate.branch_pick", lang_of(request))
        session = request.session_hash if request else None
        token_index, alternative_id = int(token_choice.split(":", 1)[0]), int(alternative_choice.split(":", 1)[0])
        try:
            run = playground.branch(parent, token_index, alternative_id, session=session, owner=request.username or "")
        except PlaygroundError as exc:
            raise ui_error(exc, request) from None
        # Shown whole: the prompt box holds the prompt it grew from, the output box the kept tokens, the swapped one
        # and the continuation (see branch_view).
        prompt_box = branch_view(parent, run.result, "")[0]
        for values in stream_to_ui(run, session, mode, lang_of(request), lambda text: branch_view(parent, run.result, text)[1]):
            yield *values, prompt_box
            prompt_box = gr.skip()

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
        """Fit a length slider (max or min new tokens) to the chosen model's context (a bad choice is reported at Generate)."""
        try:
            context = playground.context_length(model_name)
        except (PlaygroundError, OSError):
            return gr.skip()
        if int(current_max) <= context - 1:  # a value set while this answer was on its way stays
            return gr.update(maximum=context - 1)
        return gr.update(maximum=context - 1, value=context - 1)

    def on_colour(mode: str, result: GenerationResult | None, request: gr.Request):
        lang = lang_of(request)
        return legend_html(mode, lang), run_view_html(result, mode, lang)

    run_outputs = [output, stats, token_view, records, last_result, surprisal, samples_view, open_sample, batch_results]
    generate_btn.click(
        on_generate,
        inputs={prompt, model, backend, variant, *setting_inputs, num_samples, colour_mode},
        outputs=run_outputs,
        api_visibility="private",
        concurrency_id="generate",
        concurrency_limit=playground.runs_at_once,  # they decode in one batch (batching.py)
    )
    last_result.change(branch_tokens, inputs=[last_result], outputs=[branch_token, branch_alternative], queue=False,
                       api_visibility="private")

    def show_code(result: GenerationResult | None, batch: list[GenerationResult], request: gr.Request):
        """The code of the run shown: the whole batch when it is one of the last batch's samples."""
        if result is not None and result.group_id is not None and any(r is result or r.run_id == result.run_id for r in batch):
            return code_values(playground, batch, lang_of(request), request)
        return code_values(playground, [result] if result is not None else None, lang_of(request), request)

    def show_tree(result: GenerationResult | None, request: gr.Request):
        return beam_tree_html(result.beam_tree if result is not None else None, lang_of(request))

    def export_tree(result: GenerationResult | None, fmt: str, request: gr.Request):
        if result is None or not result.beam_tree:
            return gr.update(value=None, visible=False)
        folder = Path(tempfile.mkdtemp(prefix="gpt2-playground-beams-"))
        return gr.update(value=str(static_tree(result.beam_tree, folder / f"beam-tree.{fmt}", lang_of(request))), visible=True)

    last_result.change(show_tree, inputs=last_result, outputs=beam_tree_view, queue=False, api_visibility="private")
    def export_png(result: GenerationResult | None, request: gr.Request):
        return export_tree(result, "png", request)

    def export_svg(result: GenerationResult | None, request: gr.Request):
        return export_tree(result, "svg", request)

    tree_png.click(export_png, inputs=last_result, outputs=tree_file, api_visibility="private")
    tree_svg.click(export_svg, inputs=last_result, outputs=tree_file, api_visibility="private")
    last_result.change(show_code, inputs=[last_result, batch_results], outputs=code_outputs, queue=False, api_visibility="private")
    branch_token.input(branch_alternatives, inputs=[last_result, branch_token], outputs=[branch_alternative], queue=False,
                       api_visibility="private")
    branch_btn.click(on_branch, inputs=[last_result, branch_token, branch_alternative, colour_mode],
                     outputs=[*run_outputs, prompt], api_visibility="private", concurrency_id="generate",
                     concurrency_limit=playground.runs_at_once)
    open_sample.input(on_open_sample, inputs=[open_sample, batch_results, colour_mode],
                      outputs=[output, stats, token_view, records, last_result, surprisal, samples_view], queue=False,
                      api_visibility="private")
    inputs_by_name = dict(zip(SETTING_NAMES, setting_inputs)) | {"prompt": prompt, "model": model, "backend": backend, "variant": variant}
    stop_btn.click(on_stop, inputs=None, outputs=None, api_visibility="private", **STOP_EVENT)
    model.change(on_model, inputs=[model, max_new_tokens], outputs=max_new_tokens, api_visibility="private")
    model.change(on_model, inputs=[model, min_new_tokens], outputs=min_new_tokens, api_visibility="private")
    follow_model_language(playground, model, prompt)
    # Model folders appear while the app runs (a fine-tuned model): offer them whenever the list is opened.
    model.focus(lambda: gr.update(choices=playground.model_choices()), outputs=model, queue=False, api_visibility="private")
    backend.change(lambda b: gr.update(interactive=b == "onnx"), inputs=backend, outputs=variant, queue=False, api_visibility="private")
    colour_mode.change(on_colour, inputs=[colour_mode, last_result], outputs=[legend, token_view], queue=False, api_visibility="private")
    return inputs_by_name, last_result
