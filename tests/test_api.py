"""The `/generate` endpoint of a launched app, called through gradio_client as any client would."""

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError


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
        ({"top_p": 5}, "top_p=5.0 is out of range"),
        ({"top_k": -1}, "top_k=-1 is out of range"),
        ({"seed": "abc"}, "seed must be a whole number"),
        ({"max_new_tokens": 10**6}, "max_new_tokens=1000000 is out of range"),
        ({"max_new_tokens": 64}, "does not fit this model's context of 64 tokens"),
        ({"prompt": "x" * 300_000, "max_new_tokens": 5}, "characters; the limit is"),
    ],
)
def test_invalid_settings_give_a_clear_error(client, bad, message):
    with pytest.raises(AppError, match=message):
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
    before = app_history.count()
    text, run = client.predict(prompt="Saved <i>once</i>", max_new_tokens=6, seed=9, api_name="/generate")
    assert app_history.count() == before + 1
    row = app_history.get(run["run_id"])
    assert row["output"] == text and row["prompt"] == "Saved <i>once</i>" and row["settings"]["seed"] == 9
    assert row["status"] == "complete" and row["backend"] == "torch"
