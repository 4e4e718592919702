"""The remote backend: decoding in an OpenAI-compatible engine (the playground's own /v1 in a second launched app),
and every fault of a real misbehaving HTTP server on loopback (unreachable, slow, garbage, closed half-way, ...)."""

import json
import math
import socket
import threading
import time
from dataclasses import fields, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from playground.backends.base import Backend, Engine
from playground.backends.remote import EngineError, RemoteEngine
from playground.analysis.compare import compare
from playground.config import GenerationSettings
from playground.generation import Generation
from playground.records import TokenRecord
from playground.service import Playground
from tests.conftest import free_port

SETTINGS = dict(max_new_tokens=12, seed=7, temperature=0.9, top_k=0, top_alternatives=5)


@pytest.fixture(scope="module")
def engine_url(launched_app):
    """The engine: the session's launched app (tiny-gpt2), spoken to through its /v1."""
    return launched_app.rstrip("/") + "/v1"


@pytest.fixture(scope="module")
def front(tiny_source, engine_url, tmp_path_factory, models_root):
    """A second playground on the same model whose remote backend is the engine; its history in a temporary file."""
    from playground.history import HistoryStore

    return Playground(tiny_source, device="cpu", remote_url=engine_url, exports_root=tmp_path_factory.mktemp("front-exports"),
                      models_root=models_root,
                      history=HistoryStore(tmp_path_factory.mktemp("front-history") / "history.db"))


def run(playground, backend, prompt="The value of", **settings):
    generation = playground.start(prompt, GenerationSettings(**(SETTINGS | settings)), backend=backend)
    for _ in playground.stream(generation):
        pass
    return generation.result


@pytest.mark.parametrize("settings", [dict(), dict(do_sample=False), dict(repetition_penalty=1.2, top_p=0.9)])
def test_the_engine_gives_the_local_tokens_and_probabilities(front, settings):
    local, remote = run(front, "torch", **settings), run(front, "remote", **settings)
    assert (remote.info.backend, remote.info.variant) == ("remote", "tiny-gpt2")
    assert remote.text == local.text and [t.token_id for t in remote.tokens] == [t.token_id for t in local.tokens]
    for r, l in zip(remote.prompt_tokens + remote.tokens, local.prompt_tokens + local.tokens):
        assert r.bytes == l.bytes and r.text == l.text
        if l.raw_prob is None:
            assert r.raw_prob is None
            continue
        assert r.raw_prob == pytest.approx(l.raw_prob, rel=1e-5)
        assert [a.token_id for a in r.top] == [a.token_id for a in l.top]
        assert [a.prob for a in r.top] == pytest.approx([a.prob for a in l.top], rel=1e-5)
        assert r.rank == (l.rank if l.rank <= 5 else None)  # known only within the alternatives the engine gave
    # What the engine cannot give is empty, and the run says so.
    assert all(t.entropy_bits is None and t.prob is None for t in remote.tokens)
    assert any(n.key == "remote.notice" for n in remote.notices)
    assert compare(local, remote).first_divergence is None


def test_remote_runs_are_saved_and_the_engine_saves_its_own(front, app_history):
    result = run(front, "remote", prompt="Saved remotely")
    row = front.history.get(result.run_id)
    assert row["backend"] == "remote" and row["status"] == "complete" and row["output"] == result.text
    # The engine (a playground too) kept its own record of the same run, complete: the stream was read to its end.
    [engine_row] = app_history.search("Saved remotely")
    assert engine_row["output"] == result.text and app_history.get(engine_row["id"])["status"] == "complete"


def test_a_branch_and_a_stop_sequence_through_the_engine(front):
    parent = run(front, "remote", max_new_tokens=10)
    alternative = parent.tokens[2].top[1].token_id
    branch_remote = front.branch(parent, 2, alternative)
    local_parent = run(front, "torch", max_new_tokens=10)
    branch_local = front.branch(local_parent, 2, alternative)
    texts = []
    for generation in (branch_remote, branch_local):
        for _ in front.stream(generation):
            pass
        texts.append(generation.result.text)
    assert texts[0] == texts[1]
    stop = parent.text[len(parent.text) // 2:][:3]
    stopped = run(front, "remote", max_new_tokens=10, stop_sequences=(stop,))
    assert stopped.finish_reason == "stop_sequence" and stop not in stopped.text


def test_what_an_engine_cannot_do_is_refused_clearly(front, tiny_source):
    assert isinstance(front.backend("remote"), Engine) and not isinstance(front.backend("remote"), Backend)
    with pytest.raises(EngineError, match="Attention is not available with a serving engine"):
        front.analysis_backend("remote")
    with pytest.raises(EngineError, match="logits are not available with a serving engine"):
        front.inside(run(front, "remote", max_new_tokens=3))
    bare = Playground(tiny_source, device="cpu")
    with pytest.raises(Exception, match="No serving engine is configured"):
        bare.backend("remote")
    with pytest.raises(Exception, match="choose tiny-gpt2 for the remote backend"):
        front.start("x", GenerationSettings(max_new_tokens=2), backend="remote", model="tiny-copy")


def assert_same_record(remote: TokenRecord, local: TokenRecord):
    """Field by field: what both know is equal; the engine's probabilities match; what it does not report is None."""
    for field in fields(TokenRecord):
        mine, theirs = getattr(remote, field.name), getattr(local, field.name)
        if field.name in ("position", "token_id", "text", "is_prompt", "bytes"):
            assert mine == theirs, field.name
        elif field.name == "entropy_bits":
            assert mine is None
        elif field.name == "prob":  # the warped distribution: only a prompt token's (its raw one) is known
            assert mine is None if not remote.is_prompt or theirs is None else mine == pytest.approx(theirs, rel=1e-5)
        elif field.name == "raw_prob":
            assert mine is None if theirs is None else mine == pytest.approx(theirs, rel=1e-5)
        elif field.name == "rank":
            assert mine == (theirs if theirs is not None and theirs <= len(remote.top) else None)
        elif field.name == "top":
            assert [a.token_id for a in mine] == [a.token_id for a in theirs]
            assert [a.prob for a in mine] == pytest.approx([a.prob for a in theirs], rel=1e-5)
            assert [(a.text, a.bytes) for a in mine] == [(a.text, a.bytes) for a in theirs]
        else:
            raise AssertionError(f"a TokenRecord field this test does not check: {field.name}")


def test_one_generation_drives_a_local_backend_and_the_engine_alike(front):
    """The same `Generation` code over PyTorch and over the engine: N samples with seeds S + i, the same records
    field by field, the same stop sequences and Stop, saved as one group each."""
    settings = GenerationSettings(**(SETTINGS | dict(max_new_tokens=10)))
    runs = {}
    for name in ("torch", "remote"):
        runs[name] = generation = Generation(front.backend(name), front.source, "The value of", settings, num_samples=3)
        pairs = list(generation.samples())
        for i, result in enumerate(generation.results):
            assert [record for sample, record in pairs if sample == i] == result.tokens
    for local, remote in zip(runs["torch"].results, runs["remote"].results, strict=True):
        assert (remote.settings.seed, remote.text, remote.finish_reason) == (local.settings.seed, local.text, local.finish_reason)
        assert remote.sample_index == local.sample_index and remote.group_id is not None
        for r, l in zip(remote.prompt_tokens + remote.tokens, local.prompt_tokens + local.tokens, strict=True):
            assert_same_record(r, l)
    assert len({r.text for r in runs["torch"].results}) > 1  # the samples really differ

    text = runs["torch"].result.text
    stop = text[len(text) // 2:][:3]
    stopped = {}
    for name in ("torch", "remote"):
        by_sequence = Generation(front.backend(name), front.source, "The value of", replace(settings, stop_sequences=(stop,)))
        list(by_sequence)
        stop_event = threading.Event()
        by_stop = Generation(front.backend(name), front.source, "The value of", settings, stop_event=stop_event)
        for i, _ in enumerate(by_stop):
            if i == 1:
                stop_event.set()
        stopped[name] = [(g.result.finish_reason, g.result.text, len(g.result.tokens)) for g in (by_sequence, by_stop)]
    assert stopped["torch"] == stopped["remote"]
    assert [reason for reason, *_ in stopped["remote"]] == ["stop_sequence", "stopped"] and stopped["remote"][1][2] == 2

    # Through the playground, as the UI and /v1 start runs: N samples on the engine are allowed, saved as one group.
    generation = front.start("The value of", settings, backend="remote", num_samples=2)
    for _ in front.stream(generation):
        pass
    rows = [front.history.get(r.run_id) for r in generation.results]
    assert [(row["group_id"], row["sample_index"], row["status"]) for row in rows] == [
        (generation.group_id, 0, "complete"), (generation.group_id, 1, "complete")]
    assert [row["output"] for row in rows] == [r.text for r in runs["torch"].results[:2]]


@pytest.fixture(scope="module")
def front_app(front):
    """The front playground launched: its UI, /generate and /v1 with the remote backend among the choices."""
    from playground.ui.app import build_demo, launch_kwargs

    demo = build_demo(front)
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **launch_kwargs())
    yield demo.local_url
    demo.close()


def test_remote_through_the_front_apps_generate_and_v1(front_app, front):
    client = Client(front_app, verbose=False)
    kwargs = dict(prompt="An object", max_new_tokens=8, seed=4, top_k=0, api_name="/generate")
    remote_text, remote_run = client.predict(backend="remote", **kwargs)
    local_text, _ = client.predict(backend="torch", **kwargs)
    assert remote_text == local_text and remote_run["backend"] == "remote"
    assert remote_run["tokens"][0]["entropy_bits"] is None and len(remote_run["tokens"][0]["top"]) == 10
    v1 = openai.OpenAI(base_url=front_app.rstrip("/") + "/v1", api_key="unused", max_retries=0, timeout=60)
    reply = v1.completions.create(model="tiny-gpt2", prompt="An object", max_tokens=8, seed=4, logprobs=3,
                                  extra_body={"backend": "remote"})
    assert reply.choices[0].text == local_text
    # An engine decodes one sequence per request: n samples are n requests, one group, seeds S + i as on a local backend.
    second_text, _ = client.predict(backend="torch", **kwargs | {"seed": 5})
    pair = v1.completions.create(model="tiny-gpt2", prompt="An object", max_tokens=8, seed=4, n=2, extra_body={"backend": "remote"})
    assert [c.text for c in pair.choices] == [local_text, second_text] and local_text != second_text
    [group] = {front.history.get(c.model_extra["run_id"])["group_id"] for c in pair.choices}
    assert group is not None
    streamed = {}
    for chunk in v1.completions.create(model="tiny-gpt2", prompt="An object", max_tokens=8, seed=4, n=2, stream=True,
                                       extra_body={"backend": "remote"}):
        for c in chunk.choices:
            streamed[c.index] = streamed.get(c.index, "") + c.text
    assert streamed == {0: local_text, 1: second_text}


# ---- faults, from a real HTTP server on loopback that misbehaves on purpose ----------------------------

def token_chunk(token_id: int, logprob: float, alternatives: int = 5, finish: str | None = None) -> bytes:
    top = {f"token_id:{token_id + i}": logprob - i for i in range(alternatives)}
    chunk = {"id": "x", "object": "text_completion", "created": 0, "model": "bad", "choices": [
        {"index": 0, "text": "", "finish_reason": finish,
         "logprobs": {"tokens": [f"token_id:{token_id}"], "token_logprobs": [logprob], "top_logprobs": [top],
                      "text_offset": [0]}}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


class Misbehaving(BaseHTTPRequestHandler):
    """POST /v1/completions answered the way `server.mode` says."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        mode = self.server.mode
        self.server.prompts.append(body["prompt"])
        if mode == "text_only" and not isinstance(body["prompt"], str):  # as llama-cpp-python's server answers ids
            self.send_response(422)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
            return
        if mode == "text_only":
            mode = "fewer"
        if mode == "slow":
            time.sleep(3)
            return
        if mode == "http500":
            body = json.dumps({"error": {"message": "out of memory", "type": "server_error"}}).encode()
            self.send_response(500)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        if mode == "garbage":
            self.wfile.write(b"data: {this is not json\n\n")
        elif mode == "no_logprobs":
            self.wfile.write(b'data: {"choices": [{"index": 0, "text": "hello", "logprobs": null, "finish_reason": null}]}\n\n')
        elif mode == "half":
            for i in range(3):
                self.wfile.write(token_chunk(40 + i, -1.0))
                self.wfile.flush()
            # ... and the connection closes: no finish_reason, no [DONE]
        elif mode == "fewer":
            for i in range(4):
                self.wfile.write(token_chunk(40 + i, -1.0, alternatives=2, finish="length" if i == 3 else None))
            self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture(scope="module")
def bad_engine():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Misbehaving)
    server.daemon_threads = True
    server.mode = "garbage"
    server.prompts = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


@pytest.fixture
def faulty(tiny_source, bad_engine, tmp_path):
    from playground.history import HistoryStore

    url = f"http://127.0.0.1:{bad_engine.server_address[1]}/v1"
    return Playground(tiny_source, device="cpu", remote_url=url, remote_model="bad", remote_timeout_s=1.0,
                      history=HistoryStore(tmp_path / "history.db"))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


@pytest.mark.parametrize(
    "mode, message, tokens_kept",
    [
        ("garbage", "sent something that is not an OpenAI completion", 0),
        ("slow", "sent nothing for 1 s", 0),
        ("half", "closed the stream before the run finished", 3),
        ("no_logprobs", "returned no logprobs", 0),
        ("http500", "refused the request (HTTP 500): out of memory", 0),
    ],
)
def test_engine_faults_are_clear_and_the_partial_run_is_saved(faulty, bad_engine, mode, message, tokens_kept):
    bad_engine.mode = mode
    generation = faulty.start("The value", GenerationSettings(max_new_tokens=8, seed=1), backend="remote")
    with pytest.raises(EngineError, match=message.replace("(", r"\(").replace(")", r"\)")):
        for _ in faulty.stream(generation):
            pass
    row = faulty.history.get(generation.result.run_id)
    assert row["status"] == "error" and message.split(":")[0][:30] in row["error"]
    assert len(row["tokens"]["output"]) == tokens_kept
    # The playground keeps serving: the local backend still runs.
    local = faulty.start("The value", GenerationSettings(max_new_tokens=3, seed=1), backend="torch")
    assert len(list(faulty.stream(local))) == 3


def test_an_unreachable_engine_is_named_at_start(tiny_source):
    with pytest.raises(EngineError, match="cannot be reached"):
        RemoteEngine(tiny_source, f"http://127.0.0.1:{closed_port()}/v1")
    with pytest.raises(EngineError, match="not an http"):
        RemoteEngine(tiny_source, "ftp://example")


def test_fewer_alternatives_than_asked_are_shown_with_a_notice(faulty, bad_engine):
    bad_engine.mode = "fewer"
    generation = faulty.start("The value", GenerationSettings(max_new_tokens=4, seed=1, top_alternatives=10), backend="remote")
    records = list(faulty.stream(generation))
    assert [r.token_id for r in records] == [40, 41, 42, 43] and all(len(r.top) == 2 for r in records)
    assert records[0].raw_prob == pytest.approx(math.exp(-1.0)) and records[0].rank == 1
    [notice] = [n for n in generation.result.notices if n.key == "remote.fewer_alternatives"]
    assert "gave 2 alternatives per token where 10 were asked" in notice
    assert faulty.history.get(generation.result.run_id)["status"] == "complete"


def test_faults_reach_api_clients_as_errors(faulty, bad_engine):
    """Through /v1 of an app in front of the misbehaving engine: a 502 error object, or an error event mid-stream."""
    from playground.ui.app import build_demo, launch_kwargs

    demo = build_demo(faulty)
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **launch_kwargs())
    try:
        v1 = openai.OpenAI(base_url=demo.local_url.rstrip("/") + "/v1", api_key="unused", max_retries=0, timeout=30)
        bad_engine.mode = "garbage"
        with pytest.raises(openai.InternalServerError) as caught:
            v1.completions.create(model="tiny-gpt2", prompt="x", max_tokens=4, extra_body={"backend": "remote"})
        assert caught.value.status_code == 502 and "not an OpenAI completion" in caught.value.body["message"]
        assert "saved in the history as run" in caught.value.body["message"]
        bad_engine.mode = "half"
        chunks = []
        with pytest.raises(openai.APIError, match="closed the stream before the run finished"):
            for chunk in v1.completions.create(model="tiny-gpt2", prompt="x", max_tokens=8, stream=True,
                                               extra_body={"backend": "remote"}):
                chunks.append(chunk)
        assert len(chunks) == 3  # the tokens before the fault reached the client
        client = Client(demo.local_url, verbose=False)
        with pytest.raises(AppError, match="closed the stream"):
            client.predict(prompt="x", max_new_tokens=8, backend="remote", api_name="/generate")
        assert client.predict(prompt="x", max_new_tokens=2, seed=1, backend="torch", api_name="/generate")[0] is not None
    finally:
        demo.close()


def test_an_engine_that_takes_only_text_prompts_gets_text(faulty, bad_engine):
    bad_engine.mode = "text_only"
    bad_engine.prompts.clear()
    for _ in range(2):
        generation = faulty.start("The value", GenerationSettings(max_new_tokens=4, seed=1), backend="remote")
        assert [r.token_id for r in faulty.stream(generation)] == [40, 41, 42, 43]
    ids = faulty.source.codec.encode("The value")
    assert bad_engine.prompts == [ids, "The value", "The value"]  # refused once, then text from the start


def test_the_command_line_names_what_is_missing(tiny_model_dir, capsys):
    from playground.cli import main

    assert main(["--model", str(tiny_model_dir), "--backend", "remote"]) == 2
    assert "--backend remote needs --remote-url URL" in capsys.readouterr().err
    assert main(["--model", str(tiny_model_dir), "--backend", "remote", "--remote-url",
                 f"http://127.0.0.1:{closed_port()}/v1", "--no-browser"]) == 2
    assert "cannot be reached" in capsys.readouterr().err
