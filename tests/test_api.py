"""The `/generate` endpoint of a launched app, called through gradio_client as any client would."""

import re

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from .conftest import last_run_id, saved_since


@pytest.fixture(scope="module")
def client(launched_app):
    return Client(launched_app, verbose=False)


def test_generate_returns_text_and_per_token_records(client):
    text, run = client.predict(prompt="The value of", max_new_tokens=12, seed=7, api_name="/generate")
    assert isinstance(text, str) and text == run["text"]
    assert len(run["tokens"]) == 12 and run["settings"]["seed"] == 7
    first = run["tokens"][0]
    assert {"token_id", "text", "prob", "raw_prob", "rank", "entropy_bits", "top"} <= first.keys()
    assert len(first["top"]) == 10 and first["top"][0]["prob"] >= first["top"][-1]["prob"]
    assert run["prompt_tokens"][0]["raw_prob"] is None and run["prompt_tokens"][1]["raw_prob"] > 0
    assert run["metrics"]["prompt_perplexity"] > 1
    assert run["backend"] == "torch" and run["model"] == "tiny-gpt2"


def test_same_seed_reproduces_through_the_api(client):
    kwargs = dict(prompt="An object", max_new_tokens=15, do_sample=True, temperature=0.9, top_k=20, top_p=0.95,
                  repetition_penalty=1.1, seed=123, api_name="/generate")
    assert client.predict(**kwargs)[0] == client.predict(**kwargs)[0]


def test_random_seed_is_recorded_and_replays(client):
    text, run = client.predict(prompt="A list", max_new_tokens=10, api_name="/generate")
    again, _ = client.predict(prompt="A list", max_new_tokens=10, seed=run["settings"]["seed"], api_name="/generate")
    assert again == text


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"temperature": -1}, "temperature=-1.0 is out of range"),
        ({"temperature": 1e300}, "temperature=1e+300 is out of range"),
        ({"top_p": 0}, "top_p=0.0 is out of range"),
        ({"top_p": 5}, "top_p=5.0 is out of range"),
        ({"top_k": -1}, "top_k=-1 is out of range"),
        ({"seed": "abc"}, "seed must be a whole number"),
        ({"max_new_tokens": 10**6}, "max_new_tokens=1000000 is out of range"),
        ({"max_new_tokens": 64}, "does not fit this model's context of 64 tokens"),
        ({"prompt": "x" * 1_000_000, "max_new_tokens": 5}, "1,000,000 characters; the limit is"),
        ({"model": "/etc"}, "cannot be chosen here"),
        ({"model": "../models"}, "cannot be chosen here"),
        ({"model": ["tiny-copy"]}, "cannot be chosen here"),
    ],
)
def test_invalid_settings_give_a_clear_error(client, bad, message):
    with pytest.raises(AppError, match=re.escape(message)):
        client.predict(**({"prompt": "x"} | bad), api_name="/generate")
    # ... and the server keeps serving.
    assert client.predict(prompt="x", max_new_tokens=2, seed=1, api_name="/generate")[0] is not None


def test_hostile_text_round_trips_literally(client):
    prompt = '<img src=x onerror="alert(1)"> \u202eRTL 😀 \x00'
    _, run = client.predict(prompt=prompt, max_new_tokens=3, seed=1, api_name="/generate")
    assert run["prompt"] == prompt


def test_onnx_backend_through_the_api_matches_pytorch(client):
    kwargs = dict(prompt="The value of", max_new_tokens=12, seed=3, api_name="/generate")
    torch_text, torch_run = client.predict(backend="torch", **kwargs)
    onnx_text, onnx_run = client.predict(backend="onnx", variant="fp32", **kwargs)
    assert (onnx_run["backend"], onnx_run["variant"], onnx_run["provider"]) == ("onnx", "fp32", "CPUExecutionProvider")
    assert onnx_text == torch_text
    _, int8_run = client.predict(backend="onnx", variant="int8", **kwargs)
    assert int8_run["variant"] == "int8" and len(int8_run["tokens"]) == 12


def test_unrunnable_variant_is_refused_with_what_would_run(client):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(AppError, match="fp16 variant needs a GPU"):
        client.predict(prompt="x", max_new_tokens=2, backend="onnx", variant="fp16", api_name="/generate")
    with pytest.raises(AppError, match="Unknown backend 'tensorflow'"):
        client.predict(prompt="x", max_new_tokens=2, backend="tensorflow", api_name="/generate")


def test_each_api_run_is_saved_once(client, app_history):
    before = last_run_id(app_history)
    text, run = client.predict(prompt="Saved <i>once</i>", max_new_tokens=6, seed=9, api_name="/generate")
    assert saved_since(app_history, before, ["Saved <i>once</i>"]) == ["Saved <i>once</i>"]
    row = app_history.get(run["run_id"])
    assert row["output"] == text and row["prompt"] == "Saved <i>once</i>" and row["settings"]["seed"] == 9
    assert row["status"] == "complete" and row["backend"] == "torch"


def test_a_model_from_the_models_folder_through_the_api(client):
    _, run = client.predict(prompt="The value", max_new_tokens=4, seed=5, model="tiny-copy", api_name="/generate")
    assert run["model"] == "tiny-copy" and len(run["tokens"]) == 4


def test_invalid_utf16_and_control_characters_through_raw_http(launched_app):
    """JSON can carry a lone surrogate that no Python client would send; the server replaces it and answers."""
    import json

    import httpx

    base = launched_app.rstrip("/")
    body = ('{"data": ["a\\ud800b\\u0000\\u0007 \\u202e\\u05e9\\u05dc\\u05d5\\u05dd", 3, true, 1.0, 50, 1.0, 1.0, 7, '
            '1.0, 0, null, 10, 0, false, 1, 1.0, false, 0.0, null, null, null, 1]}')  # the last: num_return_sequences (raw HTTP sends every input)
    event = httpx.post(f"{base}/gradio_api/call/generate", content=body, headers={"content-type": "application/json"})
    assert event.status_code == 200, event.text
    stream = httpx.get(f"{base}/gradio_api/call/generate/{event.json()['event_id']}", timeout=60).text
    assert "event: complete" in stream, stream
    [(text, run)] = json.loads(stream.split("event: complete\ndata: ", 1)[1].splitlines()[0])
    assert run["prompt"] == "a?b\x00\x07 \u202e\u05e9\u05dc\u05d5\u05dd" and len(run["tokens"]) == 3 and run["text"] == text


def test_two_users_at_once_get_their_own_seeded_results_saved_once(launched_app, app_history):
    from concurrent.futures import ThreadPoolExecutor

    requests = [dict(prompt=f"User {user} asks", max_new_tokens=20, seed=100 * user + i, temperature=0.9,
                     backend=("torch", "onnx")[user])
                for user in (0, 1) for i in range(3)]

    def user_session(user):
        client = Client(launched_app, verbose=False)  # a session of its own
        return [client.predict(**r, api_name="/generate") for r in requests if r["prompt"] == f"User {user} asks"]

    before = last_run_id(app_history)
    with ThreadPoolExecutor(2) as pool:
        concurrent = [reply for replies in pool.map(user_session, (0, 1)) for reply in replies]
    prompts = [r["prompt"] for r in requests]
    assert saved_since(app_history, before, prompts) == sorted(prompts)  # each saved once
    alone = Client(launched_app, verbose=False)
    for request, (text, run) in zip(requests, concurrent):
        assert run["prompt"] == request["prompt"] and run["settings"]["seed"] == request["seed"]
        assert run["backend"] == request["backend"]
        assert alone.predict(**request, api_name="/generate")[0] == text  # the same text as when run alone
    assert len({run["run_id"] for _, run in concurrent}) == len(requests)


def test_records_of_a_mixed_script_prompt_reassemble_byte_exactly(client):
    """CJK, accented Latin, an emoji and a ZWJ emoji sequence: every record carries its exact bytes."""
    prompt = "注意 café 🙂 👨‍👩‍👧"
    text, run = client.predict(prompt=prompt, max_new_tokens=20, seed=5, api_name="/generate")
    assert bytes(b for t in run["prompt_tokens"] for b in t["bytes"]) == prompt.encode()
    output = bytes(b for t in run["tokens"] for b in t["bytes"])
    assert output.decode("utf-8", errors="backslashreplace").startswith(text)
    assert all(isinstance(alt["bytes"], list) for t in run["tokens"] for alt in t["top"])
    assert "".join(u["text"] for u in run["units"]).startswith(prompt + text)
    assert "\ufffd" not in repr(run)


def test_the_app_silences_exactly_gradios_deprecated_status_warning(client):
    """Gradio 6.17.3 reads a status name Starlette 1.x deprecated at every queue join, one log line per click; the
    app's start (launch_kwargs) filters that warning and no other."""
    import warnings

    from starlette import status

    from playground.ui.app import launch_kwargs

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client.predict(prompt="A", max_new_tokens=2, seed=1, api_name="/generate")  # a queue join
        assert any("'HTTP_422_UNPROCESSABLE_ENTITY' is deprecated" in str(w.message) for w in caught)
        caught.clear()
        launch_kwargs()
        client.predict(prompt="A", max_new_tokens=2, seed=1, api_name="/generate")
        status.HTTP_413_REQUEST_ENTITY_TOO_LARGE  # noqa: B018 - another deprecated name still warns
    messages = [str(w.message) for w in caught]
    assert not any("HTTP_422" in m for m in messages)
    assert any("'HTTP_413_REQUEST_ENTITY_TOO_LARGE' is deprecated" in m for m in messages)
