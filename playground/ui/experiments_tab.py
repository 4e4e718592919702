"""The Experiments tab and the `/intervene` API: knock out heads, neurons and sublayers and re-score, scan every head,
patch activations from a clean prompt into a corrupted one, steer a generation; PyTorch backend only."""

from __future__ import annotations

from html import escape

import gradio as gr

from ..errors import PlaygroundError
from ..experiments import PATCH_KINDS, PATCH_PRESETS, STEER_PRESETS, Intervention, induction_prompts
from ..experiments.figures import grid_figure
from ..experiments.requests import experiment_model, run_experiment
from ..service import Playground
from .i18n import lang_of, localize_on_load, t, translated, ui_error

MODES = ("zero", "mean")
PATCH_PRESET_NAMES = (*PATCH_PRESETS, "induction")


def _choices(prefix: str, values, lang: str) -> list[tuple[str, str]]:
    return [(t(f"experiments.{prefix}.{v}", lang), v) for v in values]


def _percent(p: float) -> str:
    return f"{100 * p:.2f}%"


def rescore_html(answer: dict, lang: str) -> str:
    """Every position: its token, probability and rank as it is and knocked out, the change, the top 5 knocked out."""
    head = "".join(f"<th>{escape(t(f'experiments.col.{c}', lang))}</th>"
                   for c in ("position", "token", "prob", "ablated_prob", "change", "rank", "top"))
    rows = []
    for p in answer["positions"]:
        colour = "#b91c1c" if p["change"] < -1e-4 else "#15803d" if p["change"] > 1e-4 else "inherit"
        top = " · ".join(f"{escape(a['text'])} {_percent(a['prob'])}" for a in p["top"])
        rows.append(f"<tr><td>{p['position']}</td><td><code>{escape(p['text'])}</code></td><td>{_percent(p['prob'])}</td>"
                    f"<td>{_percent(p['ablated_prob'])}</td><td style='color:{colour}'>{100 * p['change']:+.2f}</td>"
                    f"<td>{p['rank']} → {p['ablated_rank']}</td><td style='font-size:85%'>{top}</td></tr>")
    return (f"<div id='exp-rescore-table' style='overflow-x:auto;max-height:520px'><table style='width:100%;border-collapse:collapse;"
            f"font-size:90%'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def pair_html(answer: dict, lang: str) -> str:
    """The plain and the changed continuation side by side, with their saved runs and the seed they share."""
    def side(key: str) -> str:
        run = answer[key]
        saved = t("experiments.saved_as", lang, run_id=run["run_id"]) if run.get("run_id") else ""
        return (f"<div style='flex:1;min-width:260px'><div style='font-weight:600;margin:0 0 4px'>{escape(t(f'experiments.side.{key}', lang))}</div>"
                f"<div class='exp-text' id='exp-{key}-text' style='white-space:pre-wrap;border:1px solid #d1d5db;border-radius:6px;"
                f"padding:8px'>{escape(run['text'])}</div><small>{escape(saved)}</small></div>")
    note = t("experiments.same_seed", lang, seed=answer["seed"], change=answer.get("described", ""))
    return f"<div id='exp-pair'><p>{escape(note)}</p><div style='display:flex;gap:12px;flex-wrap:wrap'>{side('plain')}{side('steered')}</div></div>"


def head_scan_figure(answer: dict, lang: str):
    change = answer["change"]
    rows = [t("experiments.layer_n", lang, n=i) for i in range(len(change))]
    columns = [t("experiments.head_n", lang, n=j) for j in range(len(change[0]) if change else 0)]
    return grid_figure(change, rows, columns, t(f"experiments.scan_title.{answer['kind']}", lang, base=f"{answer['base']:.3f}"),
                       t("experiments.axis.head", lang), t("experiments.axis.layer", lang), t(f"experiments.scale.{answer['kind']}", lang))


def patch_figure(answer: dict, lang: str):
    grid, kind = answer["restored"], answer["kind"]
    if kind == "resid":
        rows = [t("experiments.resid_n", lang, n=i) for i in range(len(grid))]
        columns = [f"{k} {tok}" for k, tok in enumerate(answer["tokens"])]  # numbered: a repeated token keeps its own column
        x_title = t("experiments.axis.position", lang)
    else:
        rows = [t("experiments.layer_n", lang, n=i) for i in range(len(grid))]
        columns = ([t("experiments.head_n", lang, n=j) for j in range(len(grid[0]))] if kind == "heads"
                   else [t("experiments.axis.mlp", lang)])
        x_title = t("experiments.axis.head" if kind == "heads" else "experiments.axis.mlp", lang)
    title = t("experiments.patch_title", lang, what=t(f"experiments.kind.{kind}", lang), clean=f"{answer['clean_logit_diff']:.3f}",
              corrupted=f"{answer['corrupted_logit_diff']:.3f}")
    return grid_figure(grid, rows, columns, title, x_title, t("experiments.axis.layer", lang), t("experiments.scale.restored", lang))


def build_experiments_tab(playground: Playground) -> dict:
    """Lay out the tab inside a gr.Tab, wire it, and register `/intervene`. Returns its main components by name."""
    gr.Markdown(translated("experiments.intro"))
    with gr.Row():
        model = gr.Dropdown(playground.model_choices(), value=playground.source.name, allow_custom_value=True,
                            label=translated("experiments.model"), elem_id="exp-model", scale=2)
        backend = gr.Dropdown(playground.backend_choices(), value="torch", label=translated("experiments.backend"),
                              info=translated("experiments.backend_info"), elem_id="exp-backend", scale=1)
        # Shared by every sub-tab that generates (Knock out's Generate on, Steering): where all of them show.
        max_new = gr.Number(24, precision=0, label=translated("experiments.max_new_tokens"), elem_id="exp-max-new", scale=1)
        seed = gr.Number(1, precision=0, label=translated("experiments.seed"), elem_id="exp-seed", scale=1)
    with gr.Tabs():
        with gr.Tab(translated("experiments.tab.ablate"), id="exp-ablate"):
            gr.Markdown(translated("experiments.ablate_intro"))
            ablate_prompt = gr.Textbox(label=translated("experiments.prompt"), lines=2, elem_id="exp-ablate-prompt")
            with gr.Row():
                heads = gr.Textbox(label=translated("experiments.heads"), placeholder="0.1, 2.3", info=translated("experiments.heads_info"),
                                   elem_id="exp-heads")
                neurons = gr.Textbox(label=translated("experiments.neurons"), placeholder="1.300", info=translated("experiments.neurons_info"),
                                     elem_id="exp-neurons")
                attn_layers = gr.Textbox(label=translated("experiments.attn_layers"), placeholder="0, 2", elem_id="exp-attn")
                mlp_layers = gr.Textbox(label=translated("experiments.mlp_layers"), placeholder="1", elem_id="exp-mlp")
            ablate_mode = gr.Radio(_choices("mode", MODES, "en"), value="zero", label=translated("experiments.mode"),
                                   info=translated("experiments.mode_info"), elem_id="exp-ablate-mode")
            with gr.Row():
                rescore_btn = gr.Button(translated("experiments.rescore"), variant="primary", elem_id="exp-rescore-btn")
                ablate_generate_btn = gr.Button(translated("experiments.generate_on"), elem_id="exp-ablate-generate-btn")
            ablate_out = gr.HTML(elem_id="exp-ablate-out")
        with gr.Tab(translated("experiments.tab.scan"), id="exp-scan"):
            gr.Markdown(translated("experiments.scan_intro"))
            scan_prompt = gr.Textbox(label=translated("experiments.prompt"), lines=2, elem_id="exp-scan-prompt")
            with gr.Row():
                scan_target = gr.Textbox(label=translated("experiments.target"), info=translated("experiments.target_info"),
                                         elem_id="exp-scan-target")
                scan_contrast = gr.Textbox(label=translated("experiments.contrast"), info=translated("experiments.contrast_info"),
                                           elem_id="exp-scan-contrast")
                scan_mode = gr.Radio(_choices("mode", MODES, "en"), value="zero", label=translated("experiments.mode"),
                                     elem_id="exp-scan-mode")
            with gr.Row():
                scan_btn = gr.Button(translated("experiments.scan"), variant="primary", elem_id="exp-scan-btn")
                induction_btn = gr.Button(translated("experiments.preset_induction"), elem_id="exp-scan-induction")
            scan_status = gr.Markdown(elem_id="exp-scan-status")
            scan_plot = gr.Plot(elem_id="exp-scan-plot", show_label=False)
        with gr.Tab(translated("experiments.tab.patch"), id="exp-patch"):
            gr.Markdown(translated("experiments.patch_intro"))
            with gr.Row():
                patch_preset = gr.Dropdown(_choices("preset", PATCH_PRESET_NAMES, "en"), value="ioi",
                                           label=translated("experiments.preset"), elem_id="exp-patch-preset", scale=2)
                preset_btn = gr.Button(translated("experiments.use_preset"), elem_id="exp-patch-use", scale=1)
            with gr.Row():
                clean = gr.Textbox(label=translated("experiments.clean"), lines=2, elem_id="exp-clean")
                corrupted = gr.Textbox(label=translated("experiments.corrupted"), lines=2, elem_id="exp-corrupted")
            with gr.Row():
                answer_box = gr.Textbox(label=translated("experiments.answer"), info=translated("experiments.answer_info"),
                                        elem_id="exp-answer")
                wrong_box = gr.Textbox(label=translated("experiments.wrong"), info=translated("experiments.wrong_info"),
                                       elem_id="exp-wrong")
                patch_kind = gr.Radio(_choices("kind", PATCH_KINDS, "en"), value="resid", label=translated("experiments.patch_what"),
                                      elem_id="exp-patch-kind")
            patch_btn = gr.Button(translated("experiments.patch"), variant="primary", elem_id="exp-patch-btn")
            patch_status = gr.Markdown(elem_id="exp-patch-status")
            patch_plot = gr.Plot(elem_id="exp-patch-plot", show_label=False)
        with gr.Tab(translated("experiments.tab.steer"), id="exp-steer"):
            gr.Markdown(translated("experiments.steer_intro"))
            with gr.Row():
                steer_preset = gr.Dropdown(_choices("steer_preset", STEER_PRESETS, "en"), value="sentiment",
                                           label=translated("experiments.preset"), elem_id="exp-steer-preset", scale=2)
                steer_preset_btn = gr.Button(translated("experiments.use_preset"), elem_id="exp-steer-use", scale=1)
            steer_prompt = gr.Textbox(label=translated("experiments.prompt"), lines=2, elem_id="exp-steer-prompt")
            with gr.Row():
                toward = gr.Textbox(label=translated("experiments.toward"), info=translated("experiments.toward_info"), lines=3,
                                    elem_id="exp-toward")
                away = gr.Textbox(label=translated("experiments.away"), info=translated("experiments.away_info"), lines=3,
                                  elem_id="exp-away")
            with gr.Row():
                steer_layer = gr.Number(1, precision=0, label=translated("experiments.steer_layer"),
                                        info=translated("experiments.steer_layer_info"), elem_id="exp-steer-layer")
                strength = gr.Textbox("4", label=translated("experiments.strength"), info=translated("experiments.strength_info"),
                                      elem_id="exp-strength")
            steer_btn = gr.Button(translated("experiments.steer"), variant="primary", elem_id="exp-steer-btn")
            steer_out = gr.HTML(elem_id="exp-steer-out")

    localize_on_load([ablate_mode, scan_mode, patch_kind, patch_preset, steer_preset],
                     lambda lang: (gr.update(choices=_choices("mode", MODES, lang)), gr.update(choices=_choices("mode", MODES, lang)),
                                   gr.update(choices=_choices("kind", PATCH_KINDS, lang)),
                                   gr.update(choices=_choices("preset", PATCH_PRESET_NAMES, lang)),
                                   gr.update(choices=_choices("steer_preset", STEER_PRESETS, lang))))

    def knocked_out(form: dict) -> dict:
        return {"heads": form[heads], "neurons": form[neurons], "attn_layers": form[attn_layers], "mlp_layers": form[mlp_layers],
                "mode": form[ablate_mode]}

    def do_rescore(form: dict, request: gr.Request):
        lang = lang_of(request)
        try:
            answer = run_experiment(playground, "rescore", prompt=form[ablate_prompt], intervention=knocked_out(form),
                                    model=form[model], backend=form[backend])
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        return rescore_html(answer, lang)

    def do_pair(form: dict, request: gr.Request, steering: bool):
        lang = lang_of(request)
        change = ({"steer_layer": form[steer_layer], "steer_strength": form[strength], "steer_positive": form[toward],
                   "steer_negative": form[away]} if steering else knocked_out(form))
        try:
            answer = run_experiment(playground, "steer", prompt=form[steer_prompt if steering else ablate_prompt], intervention=change,
                                    model=form[model], backend=form[backend], max_new_tokens=form[max_new], seed=form[seed],
                                    owner=request.username or "")
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        return pair_html(answer | {"described": Intervention.from_dict(answer["intervention"]).describe()}, lang)

    def do_scan(form: dict, request: gr.Request):
        lang = lang_of(request)
        try:
            answer = run_experiment(playground, "head_scan", prompt=form[scan_prompt], target=form[scan_target],
                                    contrast=form[scan_contrast] or None, mode=form[scan_mode], model=form[model], backend=form[backend])
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        status = t("experiments.scan_done", lang, heads=len(answer["change"]) * len(answer["change"][0]), tokens=len(answer["tokens"]))
        return status, head_scan_figure(answer, lang)

    def do_patch(form: dict, request: gr.Request):
        lang = lang_of(request)
        try:
            answer = run_experiment(playground, "patch", prompt=form[clean], corrupted=form[corrupted], target=form[answer_box],
                                    contrast=form[wrong_box], kind=form[patch_kind], model=form[model], backend=form[backend])
        except PlaygroundError as exc:
            raise ui_error(exc, lang) from None
        status = t("experiments.patch_done", lang, clean=f"{answer['clean_logit_diff']:.3f}",
                   corrupted=f"{answer['corrupted_logit_diff']:.3f}", tokens=len(answer["tokens"]))
        return status, patch_figure(answer, lang)

    def induction_texts(model_name: str):
        """The induction test for the chosen model, as text: (clean, corrupted, answer, wrong)."""
        _, source = experiment_model(playground, "torch", model_name)
        codec = source.codec
        clean_ids, corrupted_ids, answer, wrong = induction_prompts(codec)
        return codec.decode(clean_ids), codec.decode(corrupted_ids), codec.decode([answer]), codec.decode([wrong])

    def use_patch_preset(name: str, model_name: str, request: gr.Request):
        try:
            return PATCH_PRESETS[name] if name in PATCH_PRESETS else induction_texts(model_name)
        except PlaygroundError as exc:
            raise ui_error(exc, request) from None

    def use_induction(model_name: str, request: gr.Request):
        try:
            clean_text, _, answer, _ = induction_texts(model_name)
        except PlaygroundError as exc:
            raise ui_error(exc, request) from None
        return clean_text, answer, ""

    def use_steer_preset(name: str):
        positive, negative = STEER_PRESETS[name]
        return "\n".join(positive), "\n".join(negative)

    ablate_form = {model, backend, ablate_prompt, heads, neurons, attn_layers, mlp_layers, ablate_mode, max_new, seed}
    rescore_btn.click(do_rescore, inputs=ablate_form, outputs=[ablate_out], api_visibility="private", concurrency_id="experiments")
    def do_ablated_pair(form: dict, request: gr.Request):
        return do_pair(form, request, False)

    def do_steered_pair(form: dict, request: gr.Request):
        return do_pair(form, request, True)

    ablate_generate_btn.click(do_ablated_pair, inputs=ablate_form, outputs=[ablate_out],
                              api_visibility="private", concurrency_id="experiments")
    scan_btn.click(do_scan, inputs={model, backend, scan_prompt, scan_target, scan_contrast, scan_mode},
                   outputs=[scan_status, scan_plot], api_visibility="private", concurrency_id="experiments")
    induction_btn.click(use_induction, inputs=[model], outputs=[scan_prompt, scan_target, scan_contrast], api_visibility="private")
    preset_btn.click(use_patch_preset, inputs=[patch_preset, model], outputs=[clean, corrupted, answer_box, wrong_box],
                     api_visibility="private")
    patch_btn.click(do_patch, inputs={model, backend, clean, corrupted, answer_box, wrong_box, patch_kind},
                    outputs=[patch_status, patch_plot], api_visibility="private", concurrency_id="experiments")
    steer_preset_btn.click(use_steer_preset, inputs=[steer_preset], outputs=[toward, away], queue=False, api_visibility="private")
    steer_btn.click(do_steered_pair,
                    inputs={model, backend, steer_prompt, toward, away, steer_layer, strength, max_new, seed},
                    outputs=[steer_out], api_visibility="private", concurrency_id="experiments")
    model.focus(lambda: gr.update(choices=playground.model_choices()), outputs=[model], queue=False, api_visibility="private")

    def intervene(experiment: str, prompt: str | list[int] | None = None, run_id: int | None = None,
                  intervention: dict | None = None, target: str | None = None, contrast: str | None = None,
                  corrupted: str | list[int] | None = None, kind: str = "resid", mode: str = "zero", model: str | None = None,
                  backend: str | None = None, max_new_tokens: int = 32, seed: int | None = None, request: gr.Request = None) -> dict:
        """Run an experiment on the model (PyTorch backend) and return its numbers as JSON. `experiment`:
        "rescore" (every position of `prompt` or saved run `run_id` under `intervention`: prob, rank, change, top 5),
        "head_scan" (each head knocked out in turn with `mode` zero or mean: the change of log p(`target`), or of
        logit(`target`) - logit(`contrast`), at the last position, layers x heads), "patch" (`kind` resid, heads or
        mlp patched from `prompt`, the clean one, into `corrupted` of the same token length: the share of the logit
        difference `target` - `contrast` each patch restores, 0 to 1), "steer" (`prompt` continued with and without
        `intervention`, the same `seed`; both runs saved). `intervention`: {"heads": [[layer, head]], "neurons":
        [[layer, neuron]], "attn_layers": [..], "mlp_layers": [..], "mode": "zero"|"mean", "steer_layer": l,
        "steer_strength": s, "steer_positive": [texts], "steer_negative": [texts]}."""
        username = request.username if request else None
        try:
            return run_experiment(playground, experiment, prompt=prompt, run_id=run_id, intervention=intervention, target=target,
                                  contrast=contrast, corrupted=corrupted, kind=kind, mode=mode, model=model, backend=backend,
                                  max_new_tokens=max_new_tokens, seed=seed, owner=username or "", viewer=playground.viewer(username))
        except PlaygroundError as exc:
            raise gr.Error(str(exc)) from None

    gr.api(intervene, api_name="intervene", concurrency_id="experiments")
    return {"model": model, "backend": backend, "scan": scan_btn, "patch": patch_btn, "steer": steer_btn}
