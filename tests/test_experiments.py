"""Experiments on the tiny model: ablation, the head scan, activation patching and steering checked against direct
computations with hooks written here, and an intervened run through the one decoding loop, saved with its intervention."""

from __future__ import annotations


import pytest
import torch

from playground.config import GenerationSettings
from playground.errors import PlaygroundError
from playground.experiments import (
    ExperimentError, Intervention, Target, head_scan, induction_prompts, measure, patch, patched_logits, rescore,
    steered_pair,
)
from playground.generation import generate
from playground.history import HistoryStore
from playground.locales import text

PROMPT = "The quick brown fox jumps over the lazy dog and"


@pytest.fixture(scope="module")
def model(tiny_backend):
    return tiny_backend.model


@pytest.fixture(scope="module")
def codec(tiny_source):
    return tiny_source.codec


def logits_of(model, ids, hooks=()):
    """The model's logits (T, V) with `hooks` ((module, pre-hook or forward-hook, "pre"|"fwd")) installed: by hand."""
    handles = [m.register_forward_pre_hook(h) if side == "pre" else m.register_forward_hook(h) for m, h, side in hooks]
    try:
        with torch.inference_mode():
            return model(input_ids=torch.tensor([ids])).logits[0]
    finally:
        for handle in handles:
            handle.remove()


def test_empty_intervention_reproduces_the_run(tiny_backend, tiny_source, model, codec):
    settings = GenerationSettings(max_new_tokens=8, do_sample=False, seed=1)
    result = generate(tiny_backend, tiny_source, PROMPT, settings)
    ids = [t.token_id for t in result.prompt_tokens + result.tokens]
    scored = rescore(model, codec, ids, Intervention())
    recorded = [t.raw_prob for t in result.prompt_tokens[1:] + result.tokens]
    assert all(p["change"] == 0.0 and p["rank"] == p["ablated_rank"] for p in scored["positions"])
    assert [p["prob"] for p in scored["positions"]] == pytest.approx(recorded, abs=1e-5)  # the run's (cached) passes


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_ablating_a_head_is_the_computation_by_hand(model, codec, mode):
    ids = codec.encode(PROMPT)
    layer, head = 1, 1
    hd = model.config.n_embd // model.config.n_head
    c_proj = model.transformer.h[layer].attn.c_proj
    seen = []
    logits_of(model, ids, [(c_proj, lambda m, args: seen.append(args[0].clone()), "pre")])
    mean = seen[0][0, :, head * hd:(head + 1) * hd].mean(dim=0)  # (hd,) over the prompt's positions

    def by_hand(_m, args):
        x = args[0].clone()
        x[:, :, head * hd:(head + 1) * hd] = 0 if mode == "zero" else mean
        return (x,)

    expected = logits_of(model, ids, [(c_proj, by_hand, "pre")])
    scored = rescore(model, codec, ids, Intervention(heads=((layer, head),), mode=mode))
    probs = torch.softmax(expected[:-1].double(), dim=-1)
    assert [p["ablated_prob"] for p in scored["positions"]] == pytest.approx(
        [float(probs[i, t]) for i, t in enumerate(ids[1:])], abs=1e-6)
    assert any(abs(p["change"]) > 1e-4 for p in scored["positions"])  # it did change something


def test_neurons_and_sublayers_by_hand(model, codec):
    ids = codec.encode(PROMPT)
    mlp = model.transformer.h[0].mlp

    def zero_neuron(_m, _a, out):
        out = out.clone()
        out[..., 7] = 0
        return out

    expected = logits_of(model, ids, [(mlp.act, zero_neuron, "fwd"), (model.transformer.h[1].attn, lambda m, a, o: (torch.zeros_like(o[0]), *o[1:]), "fwd")])
    target = Target(ids[-1])
    got = measure(model, codec, ids[:-1] + [ids[-1]], target, Intervention(neurons=((0, 7),), attn_layers=(1,)))
    assert got == pytest.approx(float(torch.log_softmax(expected[-1].double(), -1)[ids[-1]]), abs=1e-5)


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_head_scan_cell_is_a_single_ablation(model, codec, mode):
    ids = codec.encode(PROMPT)
    target = Target(ids[3], ids[4])  # a logit difference
    scan = head_scan(model, ids, target, mode=mode)
    assert scan.change.shape == (model.config.n_layer, model.config.n_head)
    assert scan.base == pytest.approx(measure(model, codec, ids, target), abs=1e-5)
    for layer in range(model.config.n_layer):
        for head in range(model.config.n_head):
            alone = measure(model, codec, ids, target, Intervention(heads=((layer, head),), mode=mode))
            assert scan.base + scan.change[layer, head] == pytest.approx(alone, abs=1e-5)


def test_patching_everything_restores_all_and_nothing_none(model, codec):
    clean, corrupted, answer, wrong = induction_prompts(codec, seed=3)
    with torch.inference_mode():
        clean_logits = model(input_ids=torch.tensor([clean])).logits[0]
        corrupted_logits = model(input_ids=torch.tensor([corrupted])).logits[0]
    assert torch.allclose(patched_logits(model, clean, corrupted, ("resid", 0)), clean_logits, atol=1e-5)
    assert torch.allclose(patched_logits(model, clean, corrupted, ("resid", 0), positions=[]), corrupted_logits, atol=1e-5)
    grid = patch(model, clean, corrupted, Target(answer, wrong), "resid")
    n_layer = model.config.n_layer
    assert grid.restored.shape == (n_layer + 1, len(clean))
    assert grid.restored[n_layer, -1] == pytest.approx(1.0, abs=1e-5)  # the last residual at the last position: all of it
    first_diff = next(i for i, (a, b) in enumerate(zip(clean, corrupted)) if a != b)
    assert abs(grid.restored[0, :first_diff]).max(initial=0) < 1e-5  # patching a position where both agree changes nothing
    for layer, position in [(0, 0), (1, first_diff), (2, len(clean) - 1), (1, len(clean) - 2)]:  # cells run from a cache
        alone = Target(answer, wrong).measure(patched_logits(model, clean, corrupted, ("resid", layer), [position])[-1:])
        share = (float(alone[0]) - grid.corrupted) / (grid.clean - grid.corrupted)
        assert grid.restored[layer, position] == pytest.approx(share, abs=1e-5)
    heads = patch(model, clean, corrupted, Target(answer, wrong), "heads")
    assert heads.restored.shape == (n_layer, model.config.n_head)
    mlp = patch(model, clean, corrupted, Target(answer, wrong), "mlp")
    assert mlp.restored.shape == (n_layer, 1)


def test_patching_refuses_different_lengths_in_both_languages(model, codec):
    clean, corrupted = codec.encode("one two three"), codec.encode("one two three four five")
    with pytest.raises(ExperimentError) as caught:
        patch(model, clean, corrupted, Target(1, 2))
    assert caught.value.key == "experiments.lengths"
    assert f"{len(clean)} tokens and the corrupted one {len(corrupted)}" in str(caught.value)
    assert "词元" in text(caught.value.key, "zh-CN", **caught.value.params)


@pytest.mark.parametrize("values, key", [
    ({"heads": "0.9"}, "experiments.bad_head"),
    ({"heads": "7.0"}, "experiments.bad_layer"),
    ({"heads": "1-2"}, "experiments.bad_pair"),
    ({"steer_layer": 1, "steer_strength": "strong", "steer_positive": "a", "steer_negative": "b"}, "experiments.not_number"),
    ({"steer_layer": 9, "steer_positive": "a", "steer_negative": "b"}, "experiments.bad_steer_layer"),
    ({"mode": "half"}, "experiments.bad_mode"),
])
def test_bad_interventions_say_what_to_fix(model, values, key):
    with pytest.raises(PlaygroundError) as caught:
        Intervention.from_user(**values).check(model.config)
    assert caught.value.key == key
    assert text(key, "zh-CN", **caught.value.params)  # the Chinese text takes the same parameters


def test_steering_runs_through_the_loop_and_is_saved(tiny_source, tmp_path):
    from playground.service import Playground

    store = HistoryStore(tmp_path / "h.db")
    playground = Playground(tiny_source, device="cpu", history=store)
    settings = GenerationSettings(max_new_tokens=8, seed=5)
    zero = Intervention.from_user(steer_layer=1, steer_strength=0, steer_positive="good day", steer_negative="bad day")
    plain, steered = steered_pair(playground, PROMPT, settings, zero)
    assert [t.token_id for t in steered.tokens] == [t.token_id for t in plain.tokens]  # strength 0 is the plain run
    strong = Intervention.from_user(steer_layer=1, steer_strength=40, steer_positive="good day", steer_negative="bad day")
    plain, steered = steered_pair(playground, PROMPT, settings, strong)
    assert [t.token_id for t in steered.tokens] != [t.token_id for t in plain.tokens]
    saved = store.get(steered.run_id)
    assert saved["intervention"] == strong.to_dict() and store.get(plain.run_id)["intervention"] is None
    assert playground.inside(steered).result.intervention == strong.to_dict()  # the Inside view looks at the steered model
    from playground.experiments.requests import run_experiment
    from playground.ui.history_tab import table_rows

    assert table_rows([store.get(steered.run_id)])[0][3] == "torch fp32 · steer@1 ×40"  # History says how the run was made
    again = run_experiment(playground, "rescore", run_id=steered.run_id, intervention=strong.to_dict())
    assert len(again["positions"]) == len(steered.prompt_tokens) + len(steered.tokens) - 1
    # The steered run re-scored under its own steering: its tokens' probabilities as the run recorded them.
    assert [p["ablated_prob"] for p in again["positions"][-len(steered.tokens):]] == pytest.approx(
        [t.raw_prob for t in steered.tokens], abs=1e-5)


def test_intervention_needs_the_torch_backend(tiny_source, tmp_path):
    from playground.service import Playground

    playground = Playground(tiny_source, device="cpu", exports_root=tmp_path)
    with pytest.raises(ExperimentError) as caught:
        playground.start(PROMPT, GenerationSettings(max_new_tokens=2), backend="onnx",
                         intervention=Intervention(heads=((0, 0),)))
    assert caught.value.key == "experiments.needs_torch"


def test_the_induction_preset_works_on_the_tiny_model(codec):
    clean, corrupted, answer, wrong = induction_prompts(codec)
    assert len(clean) == len(corrupted) and clean[-9:] == corrupted[-9:] and answer != wrong
    assert codec.encode(codec.decode(clean)) == clean  # usable as text in the form


def test_m013_gives_older_runs_no_intervention(tmp_path):
    import sqlite3
    from contextlib import closing

    from sqlite_utils import Database

    from playground.history import migrations

    with closing(sqlite3.connect(tmp_path / "h.db")) as conn:
        migrations.apply(Database(conn), stop_before="m013_interventions")
        Database(conn).table("runs").insert({"created_at": "2026-12-01T00:00:00.000+00:00", "status": "complete", "prompt": "old"})
        conn.commit()
    store = HistoryStore(tmp_path / "h.db")
    assert store.get(1)["intervention"] is None and store.recent(1)[0]["intervention"] is None


def test_a_run_whose_model_changed_is_refused(tiny_backend, tiny_source, tmp_path):
    from playground.experiments.requests import run_experiment
    from playground.records import saved_row
    from playground.service import Playground

    store = HistoryStore(tmp_path / "h.db")
    playground = Playground(tiny_source, device="cpu", history=store)
    result = generate(tiny_backend, tiny_source, PROMPT, GenerationSettings(max_new_tokens=3, seed=2))
    run_id = store.save_run(saved_row(result, "complete", model_sha256="0" * 64))  # made with other weights
    with pytest.raises(ExperimentError) as caught:
        run_experiment(playground, "rescore", run_id=run_id)
    assert caught.value.key == "experiments.model_changed" and f"#{run_id}" in str(caught.value)
    with pytest.raises(ExperimentError, match="no run #999"):
        run_experiment(playground, "rescore", run_id=999)
