"""Continuous batching on a real tiny GPT-2: runs of different prompts, settings and owners join one backend's batch
mid-way and leave it, and each gets exactly the records it would get alone (torch and ONNX)."""

import threading

import pytest

from playground.backends.onnx import OnnxBackend
from playground.batching import DecodeBatch, Member, batch_for
from playground.config import GenerationSettings
from playground.generation import Generation, generate

from .test_batch import PROB_ATOL, assert_same_run

# Runs as different students would send them: prompts of different lengths, greedy and sampled, processors that read
# each row's history, different numbers of alternatives, a stop sequence, N samples, different lengths to go.
RUNS = [
    ("The value of the attribute is", dict(max_new_tokens=24, seed=11, temperature=1.3, top_k=0)),
    ("A", dict(max_new_tokens=12, do_sample=False, top_alternatives=3)),
    ("In the beginning of the system there was a function that", dict(max_new_tokens=6, seed=5, top_p=0.8,
                                                                      repetition_penalty=1.4, top_alternatives=8)),
    ("It is", dict(max_new_tokens=30, seed=2, temperature=0.9, no_repeat_ngram_size=2, stop_sequences=("e",))),
    ("The model", dict(max_new_tokens=16, seed=21, top_k=20, typical_p=0.9)),
]


@pytest.fixture(scope="module")
def backends(tiny_backend, tiny_source, tiny_exports_root):
    root = tiny_exports_root
    return {"torch": tiny_backend, "fp32": OnnxBackend(tiny_source, "fp32", device="cpu", exports_root=root, progress=False),
            "int8": OnnxBackend(tiny_source, "int8", device="cpu", exports_root=root, progress=False)}


def alone(backend, source, prompt, settings, num_samples=1):
    run = Generation(backend, source, prompt, GenerationSettings(**settings), num_samples=num_samples)
    list(run.samples())
    return run.results


@pytest.mark.parametrize("name", ["torch", "fp32", "int8"])
def test_runs_that_join_and_leave_mid_way_get_what_they_would_alone(backends, tiny_source, name):
    backend = backends[name]
    expected = [alone(backend, tiny_source, prompt, settings, num_samples=2 if i == 4 else 1) for i, (prompt, settings) in enumerate(RUNS)]
    runs = [Generation(backend, tiny_source, prompt, GenerationSettings(**settings), num_samples=2 if i == 4 else 1)
            for i, (prompt, settings) in enumerate(RUNS)]
    streams = [iter(run.samples()) for run in runs]
    # Run 0 starts alone; one more run joins every 3 records it reads, so each joins a batch mid-way, with rows of other
    # lengths in it; runs finish at different steps (6 to 30 tokens, a stop sequence) and leave while others go on.
    active, started, got = [0], 1, 0
    while active:
        for i in list(active):
            if next(streams[i], None) is None:
                active.remove(i)
        got += 1
        if got % 3 == 0 and started < len(runs):
            active.append(started)
            started += 1
    assert started == len(runs)
    for run, results in zip(runs, expected):
        for got_result, want in zip(run.results, results):
            assert_same_run(got_result, want, PROB_ATOL[name])
            assert [t.token_id for t in got_result.prompt_tokens] == [t.token_id for t in want.prompt_tokens]
            assert len(got_result.tokens[0].top) == len(want.tokens[0].top)


def test_runs_in_many_threads_at_once_each_get_their_own_records(backends, tiny_source):
    """What a class does: many consumers at once, one of them stepping the batch for all."""
    backend = backends["fp32"]
    jobs = [(prompt, settings | {"seed": settings.get("seed", 0) + 100 * copy}) for copy in range(3) for prompt, settings in RUNS]
    expected = [alone(backend, tiny_source, prompt, settings)[0] for prompt, settings in jobs]
    results, errors = [None] * len(jobs), []

    def student(i, prompt, settings):
        try:
            run = Generation(backend, tiny_source, prompt, GenerationSettings(**settings))
            streamed = [record for _, record in run.samples()]
            assert streamed == run.result.tokens  # the stream is the result, record for record
            results[i] = run.result
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=student, args=(i, *job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and all(r is not None for r in results)
    for got_result, want in zip(results, expected):
        assert_same_run(got_result, want, PROB_ATOL["fp32"])
    assert not batch_for(backend)._members and not batch_for(backend)._waiting  # nothing left behind


@pytest.mark.parametrize("name", ["torch", "fp32"])
def test_a_closed_stream_leaves_the_batch_at_once_and_the_others_go_on(backends, tiny_source, name):
    backend = backends[name]
    batch = batch_for(backend)
    prompt, settings = RUNS[0]
    want = alone(backend, tiny_source, prompt, settings)[0]
    gone = Generation(backend, tiny_source, "It is", GenerationSettings(max_new_tokens=30, seed=3))
    stays = Generation(backend, tiny_source, prompt, GenerationSettings(**settings))
    gone_stream, stays_stream = gone.samples(), stays.samples()
    for _ in range(4):
        next(gone_stream), next(stays_stream)
    assert {m.run for m in batch._members} == {gone, stays}
    gone_stream.close()  # a client that disconnected
    assert [m.run for m in batch._members] == [stays]  # its row is out before close() returns
    assert gone.result.finish_reason == "stopped" and 4 <= len(gone.result.tokens) <= 5
    rest = list(stays_stream)
    assert_same_run(stays.result, want, PROB_ATOL[name])
    assert len(rest) == len(want.tokens) - 4
    assert not batch._members


def test_stop_ends_a_run_in_the_batch_and_keeps_what_it_made(backends, tiny_source):
    backend = backends["fp32"]
    stop = threading.Event()
    stopped = Generation(backend, tiny_source, "It is", GenerationSettings(max_new_tokens=30, seed=3), stop_event=stop,
                         num_samples=2)
    other = Generation(backend, tiny_source, "The model", GenerationSettings(max_new_tokens=20, seed=8))
    a, b = stopped.samples(), other.samples()
    for _ in range(6):
        next(a), next(b)
    stop.set()
    made = sum(len(r.tokens) for r in stopped.results)  # the batch stepped ahead of this consumer (for the other run)
    rest = list(a)
    assert all(r.finish_reason in ("stopped", "eos", "stop_sequence") for r in stopped.results)
    assert sum(len(r.tokens) for r in stopped.results) == made == 6 + len(rest)  # nothing made after Stop, nothing lost
    list(b)
    assert_same_run(other.result, alone(backend, tiny_source, "The model", dict(max_new_tokens=20, seed=8))[0], PROB_ATOL["fp32"])


def test_admission_takes_turns_between_users_when_the_batch_is_full(backends, tiny_source):
    """One student's flood waits its turn: when rows free up, the user served longest ago joins first."""
    backend = backends["torch"]
    batch = DecodeBatch(backend, max_rows=2)

    def waiting(owner, samples=1):
        run = Generation(backend, tiny_source, "It is", GenerationSettings(max_new_tokens=4, seed=1), owner=owner,
                         num_samples=samples)
        member = Member(run, [1, 2])
        batch._waiting.append(member)
        return member

    a1, a2, a3, b1, c1 = waiting("ann", 2), waiting("ann"), waiting("ann"), waiting("bob"), waiting("cy")
    assert batch._admitted() == [a1]  # the first to arrive, as nobody has been served; its 2 rows fill the batch
    order = []  # (a1 is not really in the batch here, so each call admits as many as fit in 2 rows again)
    while batch._waiting:
        order += batch._admitted()
    assert order == [b1, c1, a2, a3]  # bob and cy before ann's second and third run


def test_a_run_that_does_not_fit_waits_for_rows_to_free_then_joins(backends, tiny_source):
    backend = backends["fp32"]
    batch = DecodeBatch(backend, max_rows=16)
    big = Generation(backend, tiny_source, "It is", GenerationSettings(max_new_tokens=8, seed=1), owner="ann", num_samples=16)
    small = Generation(backend, tiny_source, "The model", GenerationSettings(max_new_tokens=8, seed=2), owner="bob")
    big_stream, small_stream = batch.stream(big, big._prompt_ids()), batch.stream(small, small._prompt_ids())
    next(big_stream)  # ann's 16 samples fill the batch
    first = next(small_stream)  # bob's consumer steps the batch until ann's rows are done; then bob's run joins
    assert all(r.finish_reason is not None for r in big.results)
    rest = [first, *small_stream]
    assert len(rest) == 8 and small.result.finish_reason == "length"
    assert len(list(big_stream)) == 16 * 8 - 1  # ann's records were all kept for her consumer
    want = generate(backend, tiny_source, "The model", GenerationSettings(max_new_tokens=8, seed=2))
    assert_same_run(small.result, want, PROB_ATOL["fp32"])


@pytest.mark.parametrize("name", ["torch", "fp32", "int8"])
def test_prompts_of_different_lengths_prefilled_together_get_what_they_would_alone(backends, tiny_source, name):
    """Runs that arrive at the same step are prefilled as one batch, each prompt padded to the longest."""
    backend = backends[name]
    expected = [alone(backend, tiny_source, prompt, settings, num_samples=2 if i == 4 else 1) for i, (prompt, settings) in enumerate(RUNS)]
    batch = DecodeBatch(backend, max_rows=16)
    runs = [Generation(backend, tiny_source, prompt, GenerationSettings(**settings), num_samples=2 if i == 4 else 1)
            for i, (prompt, settings) in enumerate(RUNS)]
    members = [Member(run, run._prompt_ids()) for run in runs]
    batch._waiting += members  # all waiting before the first step: one prefill of five prompts of 1 to 11 tokens
    assert len({len(m.prompt_ids) for m in members}) == len(members)
    while any(batch._next(m) is not None for m in members):
        pass
    for run, results in zip(runs, expected):
        for got_result, want in zip(run.results, results):
            assert_same_run(got_result, want, PROB_ATOL[name])
            # The prompt's records too: a prefill of several rows sums in another order than one of one (float rounding).
            assert [t.token_id for t in got_result.prompt_tokens] == [t.token_id for t in want.prompt_tokens]
            for a, b in zip(got_result.prompt_tokens[1:], want.prompt_tokens[1:]):
                assert a.raw_prob == pytest.approx(b.raw_prob, abs=PROB_ATOL[name]) and a.rank == b.rank
                assert [x.token_id for x in a.top[:3]] == [x.token_id for x in b.top[:3]]
                assert [x.prob for x in a.top] == pytest.approx([x.prob for x in b.top], abs=PROB_ATOL[name])
    assert not batch._members and not batch._waiting


@pytest.mark.parametrize("name", ["torch", "fp32"])
def test_a_short_run_in_a_wide_batch_goes_on_when_the_padding_reaches_the_context(backends, tiny_source, name):
    """A 3-token prompt joins a 40-token run and is padded to its width; when that run leaves, the padding stays until
    the batch reaches the model's 64 positions, then it is dropped: the short run still gets what it would alone. A
    longer prompt joining later moves every row right."""
    backend = backends[name]
    long_ids, short_ids = list(range(100, 140)), [7, 8, 9]
    settings = {"max_new_tokens": 20, "seed": 4, "temperature": 1.2, "top_k": 0}
    short_settings = {"max_new_tokens": 55, "seed": 5, "temperature": 1.2, "top_k": 0}
    longer_settings = {"max_new_tokens": 10, "seed": 6, "temperature": 1.2, "top_k": 0}
    want = [alone_ids(backend, tiny_source, ids, s) for ids, s in
            ((long_ids, settings), (short_ids, short_settings), (list(range(200, 250)), longer_settings))]
    runs = [Generation(backend, tiny_source, "", GenerationSettings(**s), prompt_ids=ids) for ids, s in
            ((long_ids, settings), (short_ids, short_settings), (list(range(200, 250)), longer_settings))]
    streams = [iter(run) for run in runs]
    for _ in range(5):
        next(streams[0])
    next(streams[1])  # joins at width 45: 42 positions of padding
    for _ in range(3):
        next(streams[0]), next(streams[1])
    next(streams[2])  # 50 tokens: wider than the batch (48), every row moves right
    for stream in streams:
        list(stream)
    for run, expected in zip(runs, want):
        assert_same_run(run.result, expected, PROB_ATOL[name])
    assert len(runs[1].result.tokens) == 55


def alone_ids(backend, source, ids, settings):
    return generate(backend, source, "", GenerationSettings(**settings), prompt_ids=ids)
