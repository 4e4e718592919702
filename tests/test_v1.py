"""The OpenAI-compatible `/v1` routes of a launched app, called with the real `openai` SDK as any script would."""

import json
import math
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from playground.api.routes import start_samples, stop_prefix_held
from playground.api.schemas import parse_completion_request
from playground.config import GenerationSettings
from playground.generation import MAX_SAMPLES
from playground.service import Playground

from .conftest import last_run_id, saved_since, wait_until


@pytest.fixture(scope="module")
def v1(launched_app):
    return openai.OpenAI(base_url=launched_app.rstrip("/") + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def gradio(launched_app):
    return Client(launched_app, verbose=False)


def test_models_lists_the_app_model_and_the_models_folder(v1):
    names = [m.id for m in v1.models.list().data]
    assert names[0] == "tiny-gpt2" and {"tiny-copy", "tiny-zh"} <= set(names)
    assert v1.models.retrieve("tiny-copy").id == "tiny-copy"
    with pytest.raises(openai.NotFoundError):
        v1.models.retrieve("not-here")


def test_a_plain_completion_is_a_saved_run(v1, app_history):
    before = last_run_id(app_history)
    reply = v1.completions.create(model="tiny-gpt2", prompt="The value of", max_tokens=9, seed=11)
    [choice] = reply.choices
    assert reply.object == "text_completion" and reply.model == "tiny-gpt2"
    assert choice.finish_reason in ("length", "stop") and choice.logprobs is None
    assert reply.usage.completion_tokens <= 9 and reply.usage.prompt_tokens >= 2
    assert saved_since(app_history, before, ["The value of"]) == ["The value of"]
    row = app_history.get(choice.model_extra["run_id"])
    assert row["output"] == choice.text and row["prompt"] == "The value of" and row["status"] == "complete"
    assert row["settings"]["seed"] == 11 and row["settings"]["top_k"] == 0 and row["settings"]["max_new_tokens"] == 9


@pytest.mark.parametrize("sampling", [dict(temperature=0.9, top_p=0.95), dict(temperature=0)])
def test_numbers_agree_with_generate_for_the_same_seed(v1, gradio, sampling):
    reply = v1.completions.create(model="tiny-gpt2", prompt="An object", max_tokens=12, seed=42, logprobs=5,
                                  extra_body={"return_tokens_as_token_ids": True, "repetition_penalty": 1.1}, **sampling)
    greedy = sampling["temperature"] == 0
    text, run = gradio.predict(prompt="An object", max_new_tokens=12, seed=42, top_k=0, top_p=sampling.get("top_p", 1.0),
                               temperature=1.0 if greedy else sampling["temperature"], do_sample=not greedy,
                               repetition_penalty=1.1, top_alternatives=5, api_name="/generate")
    choice = reply.choices[0]
    assert choice.text == text
    assert choice.logprobs.tokens == [f"token_id:{t['token_id']}" for t in run["tokens"]]
    for logprob, top, record in zip(choice.logprobs.token_logprobs, choice.logprobs.top_logprobs, run["tokens"]):
        assert logprob == pytest.approx(math.log(record["raw_prob"]), abs=1e-6)
        expected = {f"token_id:{a['token_id']}": math.log(a["prob"]) for a in record["top"]}
        assert {k: top[k] for k in expected} == pytest.approx(expected, abs=1e-6)
        assert set(top) - set(expected) <= {f"token_id:{record['token_id']}"}  # the chosen token, when not in the top 5


def test_streamed_text_is_the_whole_text(v1, launched_app):
    kwargs = dict(model="tiny-gpt2", prompt="A list of", max_tokens=20, seed=5, temperature=0.8)
    whole = v1.completions.create(**kwargs).choices[0]
    chunks = list(v1.completions.create(stream=True, **kwargs))
    assert "".join(c.choices[0].text for c in chunks) == whole.text
    assert [c.choices[0].finish_reason for c in chunks][-1] == whole.finish_reason
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    # On the wire: server-sent events ending in data: [DONE].
    with httpx.stream("POST", launched_app.rstrip("/") + "/v1/completions", json=kwargs | {"stream": True}, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events) and events[-1] == "data: [DONE]"


def test_a_stream_never_shows_the_stop_sequence(v1):
    free = v1.completions.create(model="tiny-gpt2", prompt="The value", max_tokens=24, seed=3, temperature=0).choices[0].text
    words = free.split(" ")
    stop = " " + words[3] if len(words) > 3 else free[-3:]
    kwargs = dict(model="tiny-gpt2", prompt="The value", max_tokens=24, seed=3, temperature=0, stop=[stop])
    whole = v1.completions.create(**kwargs).choices[0]
    streamed = "".join(c.choices[0].text for c in v1.completions.create(stream=True, **kwargs))
    assert whole.finish_reason == "stop" and stop not in whole.text and streamed == whole.text == free[:free.find(stop)]
    assert stop_prefix_held("abc\n", ("\n\n",)) == 1 and stop_prefix_held("abc", ("\n\n",)) == 0


def test_n_samples_use_consecutive_seeds(v1, gradio):
    reply = v1.completions.create(model="tiny-gpt2", prompt=["One", "Two"], n=3, max_tokens=8, seed=100, temperature=1.0)
    assert [c.index for c in reply.choices] == list(range(6))
    assert [c.model_extra["seed"] for c in reply.choices] == [100, 101, 102] * 2
    for choice in reply.choices:
        prompt = ["One", "Two"][choice.index // 3]
        alone, _ = gradio.predict(prompt=prompt, max_new_tokens=8, seed=choice.model_extra["seed"], top_k=0,
                                  api_name="/generate")
        assert choice.text == alone
    streamed = {}
    for chunk in v1.completions.create(model="tiny-gpt2", prompt="One", n=2, max_tokens=8, seed=100, stream=True):
        for c in chunk.choices:
            streamed[c.index] = streamed.get(c.index, "") + c.text
    assert streamed == {0: reply.choices[0].text, 1: reply.choices[1].text}


# ---- n samples of a prompt: one batch of the decoding loop -------------------------------------------

BATCH = dict(model="tiny-gpt2", prompt="A list of", n=4, max_tokens=16, seed=20, temperature=1.0, logprobs=5,
             extra_body={"return_tokens_as_token_ids": True})


# A row's logits computed in a batch of 4 vs alone: the same maths, but a GEMM over 4 rows may sum in another
# order than a GEMV over one. Measured on the tiny model (torch, fp32): log-probabilities up to 1.2e-6 apart
# (a relative 6.5e-7, a few float32 roundings); tests/test_batch.py allows 1e-5 on the probabilities.
LOGPROB_ATOL = 1e-5


def assert_same_choice(batched, single):
    """The same sample: text, finish reason, seed, tokens, and logprobs within LOGPROB_ATOL."""
    assert batched.text == single.text and batched.finish_reason == single.finish_reason
    assert batched.model_extra["seed"] == single.model_extra["seed"]
    assert batched.logprobs.tokens == single.logprobs.tokens and batched.logprobs.text_offset == single.logprobs.text_offset
    assert batched.logprobs.token_logprobs == pytest.approx(single.logprobs.token_logprobs, abs=LOGPROB_ATOL)
    for a, b in zip(batched.logprobs.top_logprobs, single.logprobs.top_logprobs):
        assert a is None and b is None or set(a) == set(b) and a == pytest.approx(b, abs=LOGPROB_ATOL)


def streamed_choices(chunks) -> dict[int, dict]:
    """Each choice of a stream put back together: its text, tokens, and its last chunk (the one with a finish reason)."""
    choices: dict[int, dict] = {}
    for chunk in chunks:
        for c in chunk.choices:
            choice = choices.setdefault(c.index, {"text": "", "tokens": [], "last": None, "after_last": 0})
            choice["after_last"] += choice["last"] is not None  # chunks of a choice after its last one: must stay 0
            choice["text"] += c.text
            choice["tokens"] += c.logprobs.tokens if c.logprobs else []
            if c.finish_reason is not None:
                choice["last"] = c
    return choices


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_n_samples_are_one_batch_with_the_single_runs_numbers(v1, app_history, backend):
    reply = v1.completions.create(**BATCH | {"extra_body": BATCH["extra_body"] | {"backend": backend, "variant": "fp32"}})
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    assert len({c.text for c in reply.choices}) > 1  # the samples really differ
    for i, choice in enumerate(reply.choices):
        alone = v1.completions.create(**BATCH | {"n": 1, "seed": 20 + i, "extra_body": BATCH["extra_body"] | {
            "backend": backend, "variant": "fp32"}}).choices[0]
        assert_same_choice(choice, alone)
        assert app_history.get(alone.model_extra["run_id"])["group_id"] is None  # a run of one is no group
    # In the history: one group, sample i at place i with seed 20 + i, each with its own run.
    rows = [app_history.get(c.model_extra["run_id"]) for c in reply.choices]
    assert len({row["id"] for row in rows}) == 4 and rows[0]["group_id"] is not None
    assert [row["group_id"] for row in rows] == [rows[0]["group_id"]] * 4
    assert [row["sample_index"] for row in rows] == [0, 1, 2, 3]
    assert [row["settings"]["seed"] for row in rows] == [20, 21, 22, 23]
    assert [row["output"] for row in rows] == [c.text for c in reply.choices]
    assert app_history.group_ids(rows[0]["group_id"]) == [row["id"] for row in rows]
    assert {row["backend"] for row in rows} == {backend} and {row["status"] for row in rows} == {"complete"}


def test_a_streamed_batch_interleaves_its_choices_and_each_adds_up_to_the_whole_answer(v1, app_history):
    kwargs = BATCH | {"echo": True, "logprobs": 2}
    whole = v1.completions.create(**kwargs)
    chunks = list(v1.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    # The samples step together: a chunk of a later choice comes before an earlier choice's last text chunk.
    order = [c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason is None]
    assert order != sorted(order) and order[:4] == [0, 1, 2, 3]
    streamed = streamed_choices(chunks)
    assert sorted(streamed) == [0, 1, 2, 3]
    for choice in whole.choices:
        got = streamed[choice.index]
        assert got["text"] == choice.text and got["text"].startswith("A list of")  # each echoes its prompt once
        assert got["tokens"] == choice.logprobs.tokens
        assert got["last"].finish_reason == choice.finish_reason and got["after_last"] == 0
        assert got["last"].model_extra["seed"] == choice.model_extra["seed"]
        row = app_history.get(got["last"].model_extra["run_id"])
        assert row["output"] == choice.text[len("A list of"):] and row["sample_index"] == choice.index
    # After the choices: the usage chunk (no choices), then [DONE] (the SDK stops there).
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert len({app_history.get(streamed[i]["last"].model_extra["run_id"])["group_id"] for i in range(4)}) == 1


def test_stop_sequences_end_each_sample_of_a_batch_on_its_own(v1):
    # Both stops span tokens on the tiny model ("i" "e" " i", "t" ">"): a stream must hold back a tail that could
    # begin one ("i", "ie", "t") until the next token shows it does not, per sample.
    stops = ["ie i", "t>"]
    kwargs = dict(model="tiny-gpt2", prompt="A list of", n=4, max_tokens=24, seed=20, temperature=1.0, stop=stops)
    whole = v1.completions.create(**kwargs)
    reasons = [c.finish_reason for c in whole.choices]
    assert set(reasons) == {"stop", "length"}, f"{reasons}: both kinds of end are needed for this test to mean anything"
    streamed = streamed_choices(v1.completions.create(stream=True, **kwargs))
    for i, choice in enumerate(whole.choices):
        alone = v1.completions.create(**kwargs | {"n": 1, "seed": 20 + i}).choices[0]
        assert choice.text == alone.text and choice.finish_reason == alone.finish_reason
        assert not any(stop in choice.text for stop in stops)
        assert streamed[i]["text"] == choice.text and streamed[i]["last"].finish_reason == choice.finish_reason


def test_a_client_that_leaves_a_streamed_batch_stops_all_its_samples(launched_app, app_history):
    body = {"model": "tiny-gpt2", "prompt": "Leaving a batch", "n": 4, "max_tokens": 60, "seed": 3, "stream": True}
    with httpx.stream("POST", launched_app.rstrip("/") + "/v1/completions", json=body, timeout=60) as reply:
        seen = set()
        for line in reply.iter_lines():
            if line.startswith("data: {"):
                seen.add(json.loads(line[len("data: "):])["choices"][0]["index"])
            if len(seen) == 4:  # every sample has started
                break
    # The server notices the closed connection at its next write and saves then: on a loaded machine, seconds later.
    wait_until(lambda: len(app_history.search("Leaving a batch")) == 4)
    runs = sorted((app_history.get(r["id"]) for r in app_history.search("Leaving a batch")), key=lambda r: r["sample_index"])
    assert [run["status"] for run in runs] == ["stopped"] * 4
    assert [run["sample_index"] for run in runs] == [0, 1, 2, 3] and len({run["group_id"] for run in runs}) == 1
    assert all(0 < len(run["tokens"]["output"]) < 60 for run in runs)


def test_more_samples_than_one_batch_holds_continue_the_seeds(tiny_source):
    # A request holds at most 16 samples today (MAX_SAMPLES, the loop's cap); were it more, batches of 16 go on
    # with seeds S + 16, ...
    playground = Playground(tiny_source, device="cpu")
    settings = GenerationSettings(max_new_tokens=2, seed=5)
    runs = start_samples(playground, "x", settings, MAX_SAMPLES + 4, "session", None, None, None)
    assert [run.num_samples for run in runs] == [MAX_SAMPLES, 4]
    assert [r.settings.seed for run in runs for r in run.results] == list(range(5, 5 + MAX_SAMPLES + 4))
    one_by_one = start_samples(playground, [7, 8], settings, 3, "session", None, None, None, batched=False)
    assert [(run.num_samples, run.result.settings.seed) for run in one_by_one] == [(1, 5), (1, 6), (1, 7)]


def test_echo_returns_the_prompt_tokens_with_their_logprobs(v1, gradio):
    reply = v1.completions.create(model="tiny-gpt2", prompt="The value of a", max_tokens=4, seed=1, echo=True, logprobs=2)
    choice = reply.choices[0]
    _, run = gradio.predict(prompt="The value of a", max_new_tokens=4, seed=1, top_k=0, api_name="/generate")
    n_prompt = len(run["prompt_tokens"])
    assert choice.text == "The value of a" + run["text"]
    assert choice.logprobs.token_logprobs[0] is None and choice.logprobs.top_logprobs[0] is None
    assert len(choice.logprobs.tokens) == n_prompt + 4
    for logprob, record in zip(choice.logprobs.token_logprobs[1:n_prompt], run["prompt_tokens"][1:]):
        assert logprob == pytest.approx(math.log(record["raw_prob"]), abs=1e-6)
    offsets = choice.logprobs.text_offset
    assert offsets[0] == 0 and offsets == sorted(offsets)
    assert "".join(choice.logprobs.tokens) == choice.text  # plain ASCII: the token texts spell it
    streamed = list(v1.completions.create(model="tiny-gpt2", prompt="The value of a", max_tokens=4, seed=1, echo=True,
                                          logprobs=2, stream=True))
    assert "".join(c.choices[0].text for c in streamed) == choice.text
    assert [t for c in streamed if c.choices[0].logprobs for t in c.choices[0].logprobs.tokens] == choice.logprobs.tokens


@pytest.mark.parametrize(
    "bad, message, param",
    [
        ({"temperature": -1}, "temperature=-1.0 is out of range", "temperature"),
        ({"temperature": 1e300}, "temperature=1e+300 is out of range", "temperature"),
        ({"top_p": 0}, "top_p=0.0 is out of range", "top_p"),
        ({"top_p": 5}, "top_p=5.0 is out of range", "top_p"),
        ({"extra_body": {"top_k": -1}}, "top_k=-1 is out of range", "top_k"),
        ({"seed": "abc"}, "seed must be a whole number", "seed"),
        ({"max_tokens": 10**6}, "max_new_tokens=1000000 is out of range", "max_tokens"),
        ({"max_tokens": 64}, "does not fit this model's context of 64 tokens", "max_tokens"),
        ({"prompt": "x" * 1_000_000, "max_tokens": 5}, "1,000,000 characters; the limit is", "prompt"),
        ({"model": "/etc"}, "cannot be chosen here", "model"),
        ({"model": "../models"}, "cannot be chosen here", "model"),
        ({"extra_body": {"model": ["tiny-copy"]}}, "model must be a string", "model"),
        ({"extra_body": {"variant": "int2"}}, "Unknown variant 'int2'", "variant"),
        ({"extra_body": {"backend": "tensorflow"}}, "Unknown backend 'tensorflow'", "backend"),
        ({"presence_penalty": 0.5}, "presence_penalty=0.5 is not supported", "presence_penalty"),
        ({"frequency_penalty": 1}, "send repetition_penalty", "frequency_penalty"),
        ({"logit_bias": {"50": 10}}, "logit_bias", "logit_bias"),
        ({"n": 0}, "n=0 is out of range", "n"),
        ({"n": 17}, "n=17 is out of range", "n"),
        ({"prompt": ["a", "b", "c"], "n": 6}, "3 prompts x n=6 is 18 samples; at most 16", "n"),
        ({"seed": 2**63 - 2, "n": 3}, "leaves no room for 3 samples", "seed"),
        ({"logprobs": 101}, "logprobs=101 is out of range", "logprobs"),
        ({"stop": ["x"] * 9}, "At most 8 stop sequences", "stop"),
        ({"prompt": [1, 2, 10**6]}, "Token id 1000000 is not in this model's vocabulary", "prompt"),
        ({"prompt": [[]]}, "prompt must be a string", "prompt"),
        ({"extra_body": {"temprature": 1}}, "Unknown field(s): temprature", "temprature"),
        ({"best_of": 1, "n": 2}, "best_of=1 is out of range; allowed: [n, 16] (n=2)", "best_of"),
        ({"best_of": 17}, "best_of=17 is out of range", "best_of"),
        ({"prompt": ["a", "b", "c"], "best_of": 6}, "3 prompts x best_of=6 is 18 samples; at most 16", "best_of"),
        ({"best_of": 3, "stream": True}, "best_of=3 cannot be streamed", "best_of"),
        ({"extra_body": {"min_tokens": 3}}, "min_new_tokens=3 is more than max_new_tokens; use at most 2", "min_tokens"),
        ({"extra_body": {"ignore_eos": "yes"}}, "ignore_eos must be true or false", "ignore_eos"),
    ],
)
def test_invalid_requests_get_the_uis_message_in_openais_error_shape(v1, bad, message, param):
    kwargs = {"model": "tiny-gpt2", "prompt": "x", "max_tokens": 2} | bad
    with pytest.raises((openai.BadRequestError, openai.NotFoundError)) as caught:
        v1.completions.create(**kwargs)
    error = caught.value.body
    assert message in error["message"] and error["param"] == param and error["type"] == "invalid_request_error"
    # ... and the server keeps serving.
    assert v1.completions.create(model="tiny-gpt2", prompt="x", max_tokens=2, seed=1).choices[0].text is not None


def test_a_stream_that_cannot_start_fails_before_any_event(v1):
    # A setting checked against the model (its context) fails when the run is prepared: a plain 400, no stream.
    with pytest.raises(openai.BadRequestError, match="does not fit"):
        v1.completions.create(model="tiny-gpt2", prompt="x", max_tokens=64, stream=True)


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "must be a JSON object"),
        (b'"text"', 400, "must be a JSON object"),
        (b'{"prompt": {"a": 1}}', 400, "prompt must be a string"),
        (b'{"prompt": "x", "stream": "yes"}', 400, "stream must be true or false"),
        (b'{"prompt": "x", "echo": 1}', 400, "echo must be true or false"),
        (b'{"prompt": "x", "max_tokens": 1e400}', 400, "max_new_tokens"),
        (b'{"prompt": "x", "temperature": NaN}', 400, "finite number"),
        (b"\xff\xfe garbage", 400, "not valid JSON"),
    ],
)
def test_hostile_bodies_through_raw_http(launched_app, body, status, message):
    reply = httpx.post(launched_app.rstrip("/") + "/v1/completions", content=body,
                       headers={"content-type": "application/json"}, timeout=60)
    assert reply.status_code == status, reply.text
    assert message in reply.json()["error"]["message"] and "Traceback" not in reply.text


def test_an_oversized_body_and_unknown_routes_are_refused(launched_app):
    base = launched_app.rstrip("/")
    reply = httpx.post(base + "/v1/completions", content=b"x" * (5 * 2**20), headers={"content-type": "application/json"})
    assert reply.status_code == 413 and "over 4 MB" in reply.json()["error"]["message"]
    assert httpx.get(base + "/v1/nothing").json()["error"]["code"] == "404"
    assert httpx.get(base + "/v1/completions").status_code == 405


def test_hostile_text_round_trips_literally(v1):
    prompt = '<img src=x onerror="alert(1)"> \u202eRTL 😀 \x00'
    reply = v1.completions.create(model="tiny-gpt2", prompt=prompt, max_tokens=3, seed=1, echo=True)
    assert reply.choices[0].text.startswith(prompt)


def test_invalid_utf16_and_control_characters_through_raw_http(launched_app, app_history):
    body = '{"prompt": "a\\ud800b\\u0000\\u0007 \\u202e\\u05e9\\u05dc\\u05d5\\u05dd", "max_tokens": 3, "seed": 7}'
    reply = httpx.post(launched_app.rstrip("/") + "/v1/completions", content=body,
                       headers={"content-type": "application/json"}, timeout=60)
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    assert app_history.get(choice["run_id"])["prompt"] == "a?b\x00\x07 \u202e\u05e9\u05dc\u05d5\u05dd"


def test_mixed_script_text_is_never_split(v1):
    prompt = "注意 café 🙂 👨‍👩‍👧"
    reply = v1.completions.create(model="tiny-gpt2", prompt=prompt, max_tokens=20, seed=5, echo=True, logprobs=1)
    assert reply.choices[0].text.startswith(prompt) and "\ufffd" not in reply.choices[0].text
    streamed = "".join(c.choices[0].text for c in v1.completions.create(model="tiny-gpt2", prompt=prompt, max_tokens=20,
                                                                        seed=5, stream=True))
    assert prompt + streamed == reply.choices[0].text


def test_several_clients_at_once_get_their_own_seeded_results(launched_app, app_history):
    base = launched_app.rstrip("/") + "/v1"
    requests = [dict(model="tiny-gpt2", prompt=f"Client {i} asks", max_tokens=12, seed=10 + i, temperature=0.9,
                     stream=bool(i % 2)) for i in range(4)]

    def ask(request):
        client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=120)
        reply = client.completions.create(**request)
        if request["stream"]:
            return "".join(c.choices[0].text for c in reply)
        return reply.choices[0].text

    before = last_run_id(app_history)
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(ask, requests))
    prompts = [r["prompt"] for r in requests]
    assert saved_since(app_history, before, prompts) == sorted(prompts)  # each saved once
    assert together == [ask(r) for r in requests]  # the same texts as one at a time


def test_a_client_that_leaves_mid_stream_stops_its_run_saved_as_stopped(launched_app, app_history):
    body = {"model": "tiny-gpt2", "prompt": "Leaving early", "max_tokens": 60, "seed": 3, "stream": True}
    with httpx.stream("POST", launched_app.rstrip("/") + "/v1/completions", json=body, timeout=60) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: {"):
                break
    wait_until(lambda: app_history.search("Leaving early"))  # saved when the server notices the client left
    [run] = [app_history.get(r["id"]) for r in app_history.search("Leaving early")]
    assert run["status"] == "stopped" and len(run["tokens"]["output"]) < 60


def test_generate_refuses_unknown_variants_too(gradio):
    with pytest.raises(AppError, match="Unknown variant 'int2'"):
        gradio.predict(prompt="x", max_new_tokens=2, backend="torch", variant="int2", api_name="/generate")


def test_request_mapping_without_a_server():
    parsed = parse_completion_request({"prompt": "x", "temperature": 0, "stop": "\n", "logprobs": 0})
    assert parsed.settings.do_sample is False and parsed.settings.stop_sequences == ("\n",)
    assert parsed.logprobs == 0 and parsed.settings.top_k == 0 and parsed.settings.max_new_tokens == 16
    assert parse_completion_request({"prompt": "x", "top_k": None}).settings.top_k == 0


# ---- behind a login -------------------------------------------------------------------------------

def test_v1_asks_for_the_same_login(app_with_login):
    base = app_with_login.rstrip("/") + "/v1"
    with pytest.raises(openai.AuthenticationError) as caught:
        openai.OpenAI(base_url=base, api_key="unused", max_retries=0).models.list()
    assert caught.value.body["code"] == "invalid_api_key" and "USER:PASSWORD" in caught.value.body["message"]
    with pytest.raises(openai.AuthenticationError, match="Wrong user or password"):
        openai.OpenAI(base_url=base, api_key="alice:wrong", max_retries=0).completions.create(model="tiny-gpt2", prompt="x")
    assert httpx.post(base + "/completions", json={"prompt": "x"}).status_code == 401
    client = openai.OpenAI(base_url=base, api_key="alice:correct horse", max_retries=0, timeout=120)
    reply = client.completions.create(model="tiny-gpt2", prompt="The value", max_tokens=4, seed=2)
    assert reply.usage.completion_tokens <= 4
    streamed = "".join(c.choices[0].text for c in client.completions.create(model="tiny-gpt2", prompt="The value",
                                                                            max_tokens=4, seed=2, stream=True))
    assert streamed == reply.choices[0].text
    # HTTP Basic with the same account works too; the route guard still stands in front.
    assert httpx.get(base + "/models", auth=("alice", "correct horse")).status_code == 200
    assert httpx.get(app_with_login.rstrip("/") + "/monitoring/0123456789").status_code == 403
    assert httpx.get(app_with_login.rstrip("/") + "/monitoring/summary").json() == {"functions": {}}  # the API page's, empty


# ---- the name the app was started with ------------------------------------------------------------

def test_the_app_model_answers_to_the_name_it_was_started_with(tiny_zh_demo_dir, tmp_path):
    """`--model demo-zh` serves the folder demo-zh-gpt2: a client may name the model either way."""
    import asyncio

    from playground.api import build_openai_app
    from playground.history import HistoryStore
    from playground.models import resolve_model

    source = resolve_model("demo-zh", demo_zh_dir=tiny_zh_demo_dir)  # as `--model demo-zh` resolves it
    assert (source.requested, source.name) == ("demo-zh", tiny_zh_demo_dir.name)
    playground = Playground(source, device="cpu", history=HistoryStore(tmp_path / "history.db"), models_root=tmp_path / "models")
    api = build_openai_app(playground)

    async def ask():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://app") as http:
            client = openai.AsyncOpenAI(base_url="http://app/v1", api_key="unused", max_retries=0, http_client=http)
            by_start = await client.completions.create(model="demo-zh", prompt="春风", max_tokens=5, seed=3)
            by_folder = await client.completions.create(model=source.name, prompt="春风", max_tokens=5, seed=3)
            retrieved = await client.models.retrieve("demo-zh")
            with pytest.raises(openai.NotFoundError):
                await client.completions.create(model="demo", prompt="春风", max_tokens=5)
            return by_start, by_folder, retrieved

    # A thread of its own: when a browser test ran earlier in this process, Playwright's event loop runs in this one.
    with ThreadPoolExecutor(1) as pool:
        by_start, by_folder, retrieved = pool.submit(asyncio.run, ask()).result()
    assert by_start.choices[0].text == by_folder.choices[0].text and by_start.model == source.name
    assert retrieved.id == "demo-zh"
    assert playground.source_for("demo-zh") is source  # the Generate tab's model box and /generate take it too
    assert playground.history.get(by_start.choices[0].model_extra["run_id"])["model"] == source.name


def test_best_of_returns_the_n_samples_with_the_highest_mean_logprob_of_one_batch(v1, app_history):
    """OpenAI's best_of: best_of samples drawn (one batch, sample i with seed + i), the n best by mean log-probability per
    token returned, best first; every sample drawn is saved and counted."""
    kwargs = dict(model="tiny-gpt2", prompt="The best of", max_tokens=8, seed=21, logprobs=0, temperature=1.2)
    before = last_run_id(app_history)
    every = v1.completions.create(n=5, **kwargs).choices  # the same five samples, all returned
    best = v1.completions.create(n=2, best_of=5, **kwargs)

    def mean(choice):
        return sum(choice.logprobs.token_logprobs) / len(choice.logprobs.token_logprobs)

    ranked = sorted(every, key=lambda c: -mean(c))[:2]
    assert [(c.index, c.text, c.model_extra["seed"]) for c in best.choices] == [
        (i, c.text, c.model_extra["seed"]) for i, c in enumerate(ranked)]
    assert mean(best.choices[0]) >= mean(best.choices[1]) >= max(mean(c) for c in every if c not in ranked)
    assert best.usage.completion_tokens == sum(len(c.logprobs.tokens) for c in every)
    rows = [app_history.get(c.model_extra["run_id"]) for c in best.choices]
    assert len({r["group_id"] for r in rows}) == 1  # one batch
    assert saved_since(app_history, before, ["The best of"]) == ["The best of"] * 10


def test_v1_and_generate_length_controls(v1, gradio, app_history):
    reply = v1.completions.create(model="tiny-gpt2", prompt="The", max_tokens=6, seed=3,
                                  extra_body={"min_tokens": 4, "ignore_eos": True})
    [choice] = reply.choices
    assert choice.finish_reason == "length" and reply.usage.completion_tokens == 6
    settings = app_history.get(choice.model_extra["run_id"])["settings"]
    assert (settings["min_new_tokens"], settings["ignore_eos"]) == (4, True)
    text, run = gradio.predict(prompt="The", max_new_tokens=6, seed=3, top_k=0, min_new_tokens=4, ignore_eos=True,
                               api_name="/generate")
    assert text == choice.text and run["settings"]["ignore_eos"] is True and len(run["tokens"]) == 6
