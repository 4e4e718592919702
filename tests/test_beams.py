"""Beam search in the one decoding loop, on a real tiny GPT-2: the same sequences and sequence scores as transformers'
`generate(num_beams=...)` on PyTorch and ONNX fp32, a beam run batched beside other runs as it is alone, the rows a
beam step repeats and reorders on both backends, and the bad inputs' messages."""

import copy
import dataclasses
import threading
from html import escape

import pytest
import torch

from playground.backends.onnx import OnnxBackend
from playground.backends.remote import RemoteEngine
from playground.config import GenerationSettings
from playground.errors import SettingsError
from playground.generation import Generation
from playground.locales import text
from playground.records import result_from_saved, saved_row

from .test_batch import assert_same_run

# Settings as transformers names them (num_return_sequences is the run's number of samples). The tiny model never ends a
# text by itself within these lengths, so the cases marked "\n" take the newline as its end-of-text token (transformers'
# eos_token_id), which it often picks: hypotheses then finish at different lengths, and early stopping matters.
CASES = [
    ("The value of the", dict(num_beams=4, max_new_tokens=10), 2, None),
    ("It is", dict(num_beams=3, max_new_tokens=10, length_penalty=0.5, no_repeat_ngram_size=2), 3, None),
    ("A", dict(num_beams=5, max_new_tokens=12, early_stopping=True, repetition_penalty=1.3), 2, None),
    ("Hello.", dict(num_beams=4, max_new_tokens=16, early_stopping=False), 4, "\n"),
    ("The end.", dict(num_beams=3, max_new_tokens=16, early_stopping=True, length_penalty=0.0), 2, "\n"),
    ("A", dict(num_beams=4, max_new_tokens=16, early_stopping="never", length_penalty=2.0), 3, "\n"),
    ("It was", dict(num_beams=2, max_new_tokens=12, early_stopping="never", length_penalty=-1.0, no_repeat_ngram_size=3), 2, "\n"),
]


@pytest.fixture(scope="module")
def backends(tiny_backend, tiny_source, tiny_exports_root):
    root = tiny_exports_root
    return {"torch": tiny_backend, "fp32": OnnxBackend(tiny_source, "fp32", device="cpu", exports_root=root, progress=False)}


@pytest.fixture(scope="module")
def hf_model(tiny_model_dir):
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(tiny_model_dir).eval()


def with_end_token(source, label: str | None):
    """The model with `label`'s token as its end of text (None: as it is): what transformers' eos_token_id sets."""
    if label is None:
        return source
    codec = copy.copy(source.codec)
    codec.eos_ids = frozenset({source.codec.encode(label)[-1]})
    other = dataclasses.replace(source)
    other.__dict__["codec"] = codec  # the cached property's slot
    return other


def beam_run(backend, source, prompt, settings, count):
    run = Generation(backend, source, prompt, GenerationSettings(do_sample=False, seed=0, **settings), num_samples=count)
    list(run.samples())
    return run


@pytest.mark.parametrize("name", ["torch", "fp32"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_beam_search_returns_what_transformers_generate_returns(backends, tiny_source, hf_model, name, case):
    prompt, settings, count, end = CASES[case]
    source = with_end_token(tiny_source, end)
    run = beam_run(backends[name], source, prompt, settings, count)
    prompt_ids = [t.token_id for t in run.result.prompt_tokens]
    eos = sorted(source.codec.eos_ids)[0]
    hf_settings = {k: v for k, v in settings.items() if k != "max_new_tokens"}
    with torch.no_grad():
        out = hf_model.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                                max_new_tokens=settings["max_new_tokens"], do_sample=False, num_return_sequences=count,
                                eos_token_id=eos, pad_token_id=eos, output_scores=True, return_dict_in_generate=True,
                                **hf_settings)
    assert len(run.results) == count
    finished_at = set()
    for i, result in enumerate(run.results):
        ids = [t.token_id for t in result.tokens]
        want = out.sequences[i, len(prompt_ids):].tolist()
        assert ids == want[:len(ids)] and all(t == eos for t in want[len(ids):])  # transformers pads the shorter ones
        assert result.sequence_score == pytest.approx(float(out.sequences_scores[i]), abs=1e-4 if name == "fp32" else 1e-5)
        assert result.finish_reason == ("eos" if ids[-1] == eos else "length")
        finished_at.add(len(ids))
        # Each token's record is its own beam's: the path's log-probabilities sum to the cumulative score
        cumulative = sum(torch.log(torch.tensor(t.prob)).item() for t in result.tokens)
        if "repetition_penalty" not in settings and "no_repeat_ngram_size" not in settings:
            assert cumulative == pytest.approx(result.sequence_score * len(ids) ** settings.get("length_penalty", 1.0), abs=1e-3)
        assert result.beam_tree["returned"][i] >= 0
    if end is not None and case == 3:
        assert len(finished_at) > 1, "hypotheses that end at different lengths"


def test_a_beam_run_batched_beside_other_runs_gets_what_it_gets_alone(backends, tiny_source):
    for name in ("torch", "fp32"):
        backend = backends[name]
        source = with_end_token(tiny_source, "\n")
        specs = [("Hello.", dict(num_beams=4, max_new_tokens=10, no_repeat_ngram_size=2, do_sample=False), 2),
                 ("The value of the attribute is", dict(max_new_tokens=12, seed=3, temperature=1.2), 2),
                 ("A", dict(num_beams=3, max_new_tokens=8, length_penalty=0.0, do_sample=False), 3),
                 ("It", dict(max_new_tokens=7, seed=5, do_sample=False), 1)]
        alone = []
        for prompt, settings, count in specs:
            run = Generation(backend, source, prompt, GenerationSettings(**settings), num_samples=count)
            list(run.samples())
            alone.append(run.results)
        runs = [Generation(backend, source, prompt, GenerationSettings(**settings), num_samples=count)
                for prompt, settings, count in specs]
        streams = [iter(run.samples()) for run in runs]
        # The sampled run starts first; the others join a step later each, so rows of every kind share the batch, and
        # the beam runs' rows are reordered in it while the other runs' rows stay where they are.
        active, started = [1], {1}
        while active:
            for i in list(active):
                if next(streams[i], None) is None:
                    active.remove(i)
            for i in range(len(runs)):
                if i not in started:
                    started.add(i)
                    active.append(i)
                    break
        for run, results in zip(runs, alone):
            for got, want in zip(run.results, results):
                assert_same_run(got, want, 1e-5)
                assert got.sequence_score == pytest.approx(want.sequence_score, abs=1e-5) if want.sequence_score else True


@pytest.mark.parametrize("name", ["torch", "fp32"])
def test_select_repeats_and_reorders_rows_on_both_backends(backends, name):
    """The cache rows a beam step keeps: row i of the new batch continues as row rows[i] of the old one would."""
    backend = backends[name]
    prompts = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]
    logits, cache = backend.prefill_batch(prompts)
    cache = backend.join(None, cache, [0, 1, 2])
    step, cache = backend.step_batch([20, 21, 22], cache)
    step = step.clone()
    rows = [2, 0, 0, 1, 2]  # repeated and reordered, more rows than before
    cache = backend.select(cache, rows)
    after, cache = backend.step_batch([30, 30, 31, 30, 32], cache)
    fresh = []
    for prompt, first, token in [(prompts[2], 22, 30), (prompts[0], 20, 30), (prompts[0], 20, 31), (prompts[1], 21, 30),
                                 (prompts[2], 22, 32)]:
        _, own = backend.prefill(prompt)
        _, own = backend.step(first, own)
        alone, _ = backend.step(token, own)
        fresh.append(alone.clone())
    assert torch.allclose(after, torch.stack(fresh), atol=1e-4)
    cache = backend.select(cache, [4, 1, 1, 0, 3])  # the same number of rows, in place
    again, _ = backend.step_batch([40] * 5, cache)
    assert again.shape[0] == 5 and torch.isfinite(again).all()


def test_the_beam_tree_and_score_are_saved_with_the_run(backends, tiny_source):
    run = beam_run(backends["torch"], with_end_token(tiny_source, "\n"), "Hello.", dict(num_beams=3, max_new_tokens=8), 2)
    tree = run.result.beam_tree
    statuses = {node["status"] for node in tree["nodes"]}
    assert {"running", "pruned"} <= statuses and len(tree["nodes"]) >= 6 * len(run.result.tokens) - 6
    ends = [tree["nodes"][i] for i in tree["returned"]]
    assert [n["token_id"] for n in ends] == [r.tokens[-1].token_id for r in run.results]
    assert ends[0]["score"] == pytest.approx(run.result.sequence_score)
    for result in run.results:
        result.sample_index = run.results.index(result)
        back = result_from_saved(saved_row(result, "complete"))
        assert back.sequence_score == pytest.approx(result.sequence_score)
        assert (back.beam_tree == tree) if result.sample_index == 0 else back.beam_tree is None


def test_beam_sampling_is_the_seed_s(backends, tiny_source):
    settings = dict(num_beams=3, max_new_tokens=8, do_sample=True, temperature=1.5, top_k=20, seed=7)
    first = Generation(backends["fp32"], tiny_source, "It is", GenerationSettings(**settings), num_samples=2)
    second = Generation(backends["fp32"], tiny_source, "It is", GenerationSettings(**settings), num_samples=2)
    list(first.samples()), list(second.samples())
    assert [[t.token_id for t in r.tokens] for r in first.results] == [[t.token_id for t in r.tokens] for r in second.results]


def test_a_stopped_beam_run_returns_its_best_beams_so_far(backends, tiny_source):
    stop = threading.Event()
    run = Generation(backends["torch"], tiny_source, "A", GenerationSettings(num_beams=3, max_new_tokens=30, do_sample=False),
                     num_samples=2, stop_event=stop)
    with torch.inference_mode():
        stream = iter(run.samples())
        stop.set()
        list(stream)
    assert all(r.finish_reason == "stopped" for r in run.results)


@pytest.mark.parametrize("values, count, key", [
    (dict(num_beams=17), 1, "settings.range"),
    (dict(num_beams=0), 1, "settings.range"),
    (dict(num_beams=2), 3, "beams.too_many_returned"),
    (dict(num_beams=2, stop_sequences=("x",)), 1, "beams.stop_sequences"),
    (dict(early_stopping="sometimes"), 1, "settings.early_stopping"),
])
def test_bad_beam_settings_say_what_is_allowed(backends, tiny_source, values, count, key):
    with pytest.raises(SettingsError) as caught:
        Generation(backends["torch"], tiny_source, "A", GenerationSettings.from_user(max_new_tokens=8, **values), num_samples=count)
    assert caught.value.key == key
    for lang in ("en", "zh-CN"):
        message = text(key, lang, **caught.value.params)
        assert message and "{" not in message
    if key == "settings.range":
        assert "[1, 16]" in str(caught.value)


def test_beam_search_with_a_serving_engine_names_the_backends_that_can(tiny_source):
    engine = RemoteEngine(tiny_source, "http://127.0.0.1:9", model="any")
    with pytest.raises(SettingsError) as caught:
        Generation(engine, tiny_source, "A", GenerationSettings(num_beams=4, do_sample=False, max_new_tokens=8))
    assert "PyTorch" in str(caught.value) and "ONNX Runtime" in str(caught.value)
    assert "PyTorch" in text(caught.value.key, "zh-CN", **caught.value.params)


def test_generate_api_takes_beam_settings(launched_app):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(launched_app, verbose=False)
    text_out, run = client.predict(prompt="The value of the", max_new_tokens=6, do_sample=False, num_beams=3,
                                   length_penalty=0.5, early_stopping=True, num_return_sequences=2, api_name="/generate")
    assert len(run["runs"]) == 2 and run["runs"][0]["text"] == text_out
    scores = [r["sequence_score"] for r in run["runs"]]
    assert scores == sorted(scores, reverse=True) and run["beam_tree"]["returned"]
    assert run["settings"]["num_beams"] == 3 and run["settings"]["early_stopping"] is True
    with pytest.raises(AppError, match="num_beams=3"):
        client.predict(prompt="A", max_new_tokens=4, do_sample=False, num_beams=3, num_return_sequences=4, api_name="/generate")


def test_a_large_tree_draws_its_first_steps_and_says_how_to_see_the_rest(backends, tiny_source, tmp_path):
    """16 beams make 32 continuations a step: the view draws whole steps up to its node budget, says what it drew in en and
    zh-CN, and lists each returned sequence's rest after them; a PNG draws whole steps up to its budget, an SVG all."""
    from playground.analysis.beam_tree import PNG_NODES, TREE_NODES, static_tree, window
    from playground.text import visible_label
    from playground.ui.render import beam_tree_html

    run = beam_run(backends["torch"], tiny_source, "A", dict(num_beams=16, max_new_tokens=20, ignore_eos=True), 3)
    tree = run.result.beam_tree
    assert len(tree["nodes"]) == 32 * 20
    html = beam_tree_html(tree, "en")
    drawn = html.count("data-node=")
    assert drawn == 32 * (TREE_NODES // 32) and "steps 1–15 of 20" in html and "Download SVG" in html
    assert html.count("beamrest") == 3  # the rest of each returned sequence, as text
    for result in run.results:
        assert escape("…" + "".join(visible_label(token.text) for token in result.tokens[15:])) in html
    assert "第 1–15 步（共 20 步" in beam_tree_html(tree, "zh-CN")
    steps, drawn, total = window(tree, 0, PNG_NODES // 4)  # what a PNG draws of a tree four times as large
    assert list(drawn) == list(range(PNG_NODES // 4 // 32)) and total == 20 and sum(map(len, steps)) <= PNG_NODES // 4
    small = beam_run(backends["torch"], tiny_source, "A", dict(num_beams=2, max_new_tokens=4), 1).result.beam_tree
    assert "beam-tree-cut" not in beam_tree_html(small, "en")  # a small tree is drawn whole, without the note
    svg = static_tree(small, tmp_path / "tree.svg").read_text()
    assert all(f"{node['score']:.2f}" in svg for node in small["nodes"])
