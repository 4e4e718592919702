"""Batched decoding on a real tiny GPT-2: sample i of a batch equals a run of one with seed + i, on every backend."""

import threading

import pytest

from playground.backends.onnx import OnnxBackend
from playground.config import GenerationSettings
from playground.errors import SettingsError
from playground.generation import MAX_SAMPLES, Generation, generate, generate_samples

PROMPT = "The value of the attribute is"
# Probabilities of a row computed in a batch vs alone: the same maths, but a GEMM over N rows may sum in
# another order than a GEMV over one. int8 and int4 (MatMulNBits) quantize activations per row block, so a row's
# rounding does not depend on the other rows (int8 by quantize_dynamic did: one activation scale for the whole
# batch, probabilities within 1.2e-3); measured on the tiny model, 8 samples, they agree to float rounding.
PROB_ATOL = {"torch": 1e-5, "fp32": 1e-5, "int8": 1e-4, "int4": 1e-4}


@pytest.fixture(scope="module")
def backends(tiny_backend, tiny_source, tiny_exports_root):
    root = tiny_exports_root
    onnx = {v: OnnxBackend(tiny_source, v, device="cpu", exports_root=root, progress=False) for v in ("fp32", "int8", "int4")}
    return {"torch": tiny_backend, **onnx}


def assert_same_run(batch, single, atol):
    """Token for token, probability for probability (within `atol`), same ranks and alternatives."""
    assert [t.token_id for t in batch.tokens] == [t.token_id for t in single.tokens]
    assert batch.text == single.text and batch.finish_reason == single.finish_reason
    for a, b in zip(batch.tokens, single.tokens):
        assert a.raw_prob == pytest.approx(b.raw_prob, abs=atol) and a.prob == pytest.approx(b.prob, abs=atol)
        assert a.entropy_bits == pytest.approx(b.entropy_bits, abs=atol * 20)
        assert a.bytes == b.bytes
        if atol < 1e-3:  # ranks of near-equal alternatives may swap under int8's batch-wide scale
            assert a.rank == b.rank and [x.token_id for x in a.top[:3]] == [x.token_id for x in b.top[:3]]


@pytest.mark.parametrize("name", ["torch", "fp32", "int8", "int4"])
@pytest.mark.parametrize("settings", [
    dict(temperature=1.3, top_k=0),  # plain sampling over the whole vocabulary: any drift would show
    dict(temperature=0.8, top_p=0.9, repetition_penalty=1.3, no_repeat_ngram_size=2),  # processors that read each row's history
])
def test_sample_i_of_a_batch_equals_a_single_run_with_seed_plus_i(backends, tiny_source, name, settings):
    backend = backends[name]
    base = GenerationSettings(max_new_tokens=20, seed=40, **settings)
    batch = generate_samples(backend, tiny_source, PROMPT, base, num_samples=4)
    assert [r.settings.seed for r in batch] == [40, 41, 42, 43]  # each run records its own seed
    assert len({tuple(t.token_id for t in r.tokens) for r in batch}) > 1  # the samples really differ
    for i, result in enumerate(batch):
        single = generate(backend, tiny_source, PROMPT, GenerationSettings(max_new_tokens=20, seed=40 + i, **settings))
        assert_same_run(result, single, PROB_ATOL[name])
        assert result.prompt_tokens == single.prompt_tokens


@pytest.mark.parametrize("name", ["torch", "fp32"])
def test_samples_that_finish_early_leave_the_batch_and_the_rest_are_unchanged(backends, tiny_source, name):
    backend = backends[name]
    settings = GenerationSettings(max_new_tokens=30, seed=7, temperature=1.2, top_k=0, stop_sequences=("e",))
    run = Generation(backend, tiny_source, PROMPT, settings, num_samples=6)
    order = list(run.samples())
    lengths = [len(r.tokens) for r in run.results]
    assert len(set(lengths)) > 1, "the samples should stop at different steps for this test to mean anything"
    # Every record streamed once, for its own sample; a finished sample streams nothing more.
    assert [sum(1 for s, _ in order if s == i) for i in range(6)] == lengths
    for i, result in enumerate(run.results):
        assert result.finish_reason in ("stop_sequence", "length", "eos")
        single = generate(backend, tiny_source, PROMPT, GenerationSettings(max_new_tokens=30, seed=7 + i, temperature=1.2,
                                                                           top_k=0, stop_sequences=("e",)))
        assert_same_run(result, single, PROB_ATOL[name])


def test_greedy_samples_are_all_the_greedy_run(tiny_backend, tiny_source):
    settings = GenerationSettings(max_new_tokens=12, do_sample=False)
    greedy = generate(tiny_backend, tiny_source, PROMPT, settings)
    for result in generate_samples(tiny_backend, tiny_source, PROMPT, settings, num_samples=3):
        assert [t.token_id for t in result.tokens] == [t.token_id for t in greedy.tokens]


def test_iterating_a_single_run_yields_its_records(tiny_backend, tiny_source):
    run = Generation(tiny_backend, tiny_source, PROMPT, GenerationSettings(max_new_tokens=5, seed=1))
    records = list(run)
    assert records == run.result.tokens and run.results == [run.result] and run.result.finish_reason == "length"


def test_stop_mid_batch_keeps_every_sample_so_far(tiny_backend, tiny_source):
    stop = threading.Event()
    run = Generation(tiny_backend, tiny_source, PROMPT, GenerationSettings(max_new_tokens=40, seed=3), stop_event=stop,
                     num_samples=3)
    for count, (sample, _) in enumerate(run.samples(), 1):
        if count == 3 * 4:
            stop.set()
    for result in run.results:
        assert result.finish_reason in ("stopped", "eos")
        assert 1 <= len(result.tokens) <= 4 and result.text == "".join(t.text for t in result.tokens) or result.text


@pytest.mark.parametrize("count", [0, MAX_SAMPLES + 1, -2, "many", 2.5, True])
def test_out_of_range_sample_counts_are_refused_with_the_range(tiny_backend, tiny_source, count):
    with pytest.raises(SettingsError) as error:
        Generation(tiny_backend, tiny_source, PROMPT, GenerationSettings(), num_samples=count)
    assert "num_return_sequences" in str(error.value)


def test_a_seed_without_room_for_the_samples_is_refused(tiny_backend, tiny_source):
    from playground.config import MAX_SEED

    with pytest.raises(SettingsError, match="seed"):
        Generation(tiny_backend, tiny_source, PROMPT, GenerationSettings(seed=MAX_SEED, max_new_tokens=8), num_samples=2)


# --- the service, the history and the API -----------------------------------------------------------


def test_a_batch_is_saved_as_one_group_and_a_stopped_batch_keeps_its_finished_samples(tiny_source, tmp_path):
    from playground.history import HistoryStore
    from playground.service import Playground

    store = HistoryStore(tmp_path / "history.db")
    playground = Playground(tiny_source, device="cpu", exports_root=tmp_path / "exports", history=store)
    settings = GenerationSettings(max_new_tokens=30, seed=5, temperature=1.2, top_k=0, stop_sequences=("e",))
    run = playground.start(PROMPT, settings, session="s1", num_samples=4)
    # Stop once some sample has finished on its stop sequence and some have not.
    for sample, record in playground.stream_samples(run, "s1"):
        done = [r.finish_reason for r in run.results]
        if "stop_sequence" in done and "running" in done:
            playground.stop("s1")
    rows = store.group(run.group_id, full=True)
    assert [r["sample_index"] for r in rows] == [0, 1, 2, 3] and len(rows) == 4
    assert [r["settings"]["seed"] for r in rows] == [5, 6, 7, 8]
    by_reason = {r["metrics"]["finish_reason"]: r["status"] for r in rows}
    assert by_reason.get("stop_sequence") == "complete" and by_reason.get("stopped") == "stopped"
    assert [r["output"] for r in rows] == [r.text for r in run.results]
    assert all(len(r["tokens"]["output"]) == len(result.tokens) for r, result in zip(rows, run.results))
    # A single run has no group.
    single = playground.start(PROMPT, GenerationSettings(max_new_tokens=3, seed=1))
    list(playground.stream(single))
    assert store.get(single.result.run_id)["group_id"] is None


def test_group_export_writes_only_that_group(tiny_source, tmp_path):
    import json

    from playground.history import HistoryStore, main
    from playground.service import Playground

    db = tmp_path / "history.db"
    store = HistoryStore(db)
    playground = Playground(tiny_source, device="cpu", exports_root=tmp_path / "exports", history=store)
    list(playground.stream(playground.start(PROMPT, GenerationSettings(max_new_tokens=3, seed=1))))
    run = playground.start(PROMPT, GenerationSettings(max_new_tokens=3, seed=1), num_samples=3)
    list(playground.stream(run))
    out = tmp_path / "group.jsonl"
    assert main(["--db", str(db), "export", str(out), "--group", run.group_id]) == 0
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["group_id"], r["sample_index"]) for r in lines] == [(run.group_id, i) for i in range(3)]
    # Search understands groups: "group:ID" lists that group's runs, in order; the list shows both columns.
    found = store.search(f"group:{run.group_id}")
    assert [(r["group_id"], r["sample_index"]) for r in found] == [(run.group_id, i) for i in range(3)]
    from playground.ui.history_tab import table_rows

    assert table_rows(found)[1][-1] == f"{run.group_id} #1" and table_rows(store.recent(10))[-1][-1] == ""


@pytest.fixture(scope="module")
def client(launched_app):
    from gradio_client import Client

    return Client(launched_app, verbose=False)


def test_api_returns_one_run_per_sample_each_equal_to_its_single_run(client, app_history):
    text, run = client.predict(prompt="The value of", max_new_tokens=8, seed=30, num_return_sequences=3, api_name="/generate")
    runs = run["runs"]
    assert len(runs) == 3 and text == runs[0]["text"] and run["text"] == text
    assert [r["settings"]["seed"] for r in runs] == [30, 31, 32] and [r["sample_index"] for r in runs] == [0, 1, 2]
    assert len({r["group_id"] for r in runs}) == 1
    assert [r["id"] for r in app_history.group(runs[0]["group_id"])] == [r["run_id"] for r in runs]
    for r in runs:
        alone_text, alone = client.predict(prompt="The value of", max_new_tokens=8, seed=r["settings"]["seed"], api_name="/generate")
        assert [t["token_id"] for t in alone["tokens"]] == [t["token_id"] for t in r["tokens"]] and alone_text == r["text"]
    # One sample: the run as it always was, without `runs`.
    _, one = client.predict(prompt="The value of", max_new_tokens=4, seed=30, num_return_sequences=1, api_name="/generate")
    assert "runs" not in one and one["group_id"] is None


@pytest.mark.parametrize("count", [0, 17, -1])
def test_api_refuses_an_out_of_range_sample_count(client, count):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=f"num_return_sequences={count} is out of range: ask for 1 to 16"):
        client.predict(prompt="x", max_new_tokens=2, num_return_sequences=count, api_name="/generate")
