"""One step at a time (playground.steps): every step is a run of the one decoding loop; the sampler's picks are the run
Generate gives with the seed, hand picks are taken as they are, and the result is saved, branched and opened like any run."""

from __future__ import annotations

import pytest

from playground.config import GenerationSettings
from playground.errors import PlaygroundError
from playground.generation import generate
from playground.history import HistoryStore
from playground.learn.snippet import run_code
from playground.records import result_from_saved
from playground.service import Playground
from playground.steps import preview, save_steps, start_steps, token_of_text


@pytest.fixture(scope="module")
def playground(tiny_source, tmp_path_factory):
    return Playground(tiny_source, device="cpu", history=HistoryStore(tmp_path_factory.mktemp("steps") / "history.db"))


SETTINGS = GenerationSettings(max_new_tokens=6, seed=5, top_k=40, temperature=0.9)


def test_the_samplers_picks_are_the_run_generate_gives_with_the_seed(playground, tiny_source):
    run = start_steps(playground, "Once upon", SETTINGS)
    for _ in range(SETTINGS.max_new_tokens):
        step = preview(playground, run)
        # The funnel (the Inside tab's) ends in the distribution the loop drew from.
        assert step.funnel[-1]["chosen_prob"] == pytest.approx(step.next.prob, abs=1e-5)
        assert step.funnel[0]["chosen_prob"] == pytest.approx(step.next.raw_prob, abs=1e-5)
        run = run.pick(step.next.token_id, by_hand=False)
    assert preview(playground, run).ended == "length"
    saved = save_steps(playground, run)
    plain = generate(playground.backend(), tiny_source, "Once upon", SETTINGS)
    assert [t.token_id for t in saved.tokens] == [t.token_id for t in plain.tokens]
    assert [t.prob for t in saved.tokens] == pytest.approx([t.prob for t in plain.tokens], abs=1e-6)
    assert saved.run_id is not None and saved.text == plain.text


def test_hand_picks_undo_and_the_saved_run_is_a_run_like_any_other(playground, tiny_source):
    codec = tiny_source.codec
    settings = GenerationSettings(max_new_tokens=4, seed=9, top_k=2)
    run = start_steps(playground, "The cat", settings)
    first = preview(playground, run)
    outside = first.next.top[5].token_id  # not among top-k 2: the sampler could never draw it
    run = run.pick(outside, by_hand=True)
    run = run.pick(preview(playground, run).next.token_id, by_hand=False)
    run = run.undo().pick(token_of_text(codec, codec.piece(first.next.top[0].token_id).decode()), by_hand=True)
    saved = save_steps(playground, run)
    assert [t.token_id for t in saved.tokens] == [outside, first.next.top[0].token_id]
    assert saved.tokens[0].prob == 0.0 and saved.tokens[0].raw_prob == pytest.approx(first.next.top[5].prob, abs=1e-6)
    assert saved.finish_reason == "length" and saved.settings.max_new_tokens == 2
    row = playground.history.get(saved.run_id)
    assert row["status"] == "complete" and any("one step at a time" in n for n in row["metrics"]["notices"])
    # The code behind it says the script gives the sampler's tokens, not the hand-picked ones (read back too).
    for result in (saved, result_from_saved(row)):
        assert ("code.note_steps", {}) in run_code([result], "models/tiny", codec).notes
    # Branched and opened as any run: the branch continues with the run's settings; Inside's funnel at its first token.
    branch = playground.branch(saved, 1, first.next.top[1].token_id)
    for _ in playground.stream(branch):
        pass
    assert branch.result.parent_run_id == saved.run_id
    report = playground.inside_of_run(saved.run_id).report(saved.tokens[0].position)
    assert report["token"]["token_id"] == outside and report["funnel"][-1]["chosen_prob"] == 0.0


def test_a_pick_that_ends_the_text_ends_the_steps(playground, tiny_source):
    eos = min(tiny_source.codec.eos_ids)
    run = start_steps(playground, "The", GenerationSettings(max_new_tokens=5, seed=1)).pick(eos, by_hand=True)
    step = preview(playground, run)
    assert step.next is None and step.ended == "eos"


def test_text_that_is_not_one_token_and_saving_nothing_are_refused(playground, tiny_source):
    with pytest.raises(PlaygroundError, match=r"'unbelievably' is \d+ tokens here"):
        token_of_text(tiny_source.codec, "unbelievably")
    with pytest.raises(PlaygroundError, match="at least one step"):
        save_steps(playground, start_steps(playground, "x", SETTINGS))
    with pytest.raises(PlaygroundError, match="does not fit this model's context of 64 tokens"):
        start_steps(playground, "x", GenerationSettings(max_new_tokens=64))
