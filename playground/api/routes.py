"""`POST /v1/completions` and `GET /v1/models` on the playground's own server, through the one decoding loop.

Every request is one or more runs of `Playground.start`/`stream_samples`, so each sample is saved to the
history like a run of the UI or `/generate`, and a client that disconnects mid-stream stops its run (saved
as stopped). The n samples of a prompt are one batch of the decoding loop, saved as one group. The routes
live in a small Starlette app; `OpenAIRoutes`, a middleware given to Gradio's launch, hands it the `/v1`
paths after the route guard and the login check (see `login_check`); each run is saved as the logged-in user's.
"""

from __future__ import annotations

import base64
import hmac
import json
import time
import uuid
from dataclasses import replace
from typing import AsyncIterator, Iterator

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from ..backends.remote import EngineError
from ..config import GenerationSettings
from ..errors import ModelLoadError, PlaygroundError, SettingsError
from ..generation import MAX_SAMPLES, Generation
from ..limits import LimitReached
from ..records import GenerationResult, TokenRecord
from ..service import Playground
from .schemas import (ApiError, CompletionRequest, LogprobsWriter, best_of_n, finish_reason, parse_completion_request,
                      settings_error)

MAX_BODY_BYTES = 4 * 2**20  # a 200,000-character prompt, JSON-escaped, fits
OWNER = "gpt2-playground"
USER_KEY = "gpt2_playground.user"  # the ASGI scope's key for the logged-in user of a /v1 request


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.to_dict(), status_code=error.status)


def api_error(exc: Exception) -> ApiError:
    """Any failure as an OpenAI error object: the user's to fix (400 with the UI's message) or the server's (500)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, SettingsError):
        return settings_error(exc)
    if isinstance(exc, LimitReached):  # the user's fair share of a shared app: try again later
        return ApiError(str(exc), type="rate_limit_error", code="rate_limit_exceeded", status=429)
    if isinstance(exc, EngineError):  # the serving engine behind --backend remote failed: not the client's fault
        return ApiError(str(exc), type="server_error", code="engine_error", status=502)
    if isinstance(exc, ModelLoadError):
        return ApiError(str(exc), param="model", code="model_not_found", status=404)
    if isinstance(exc, PlaygroundError):
        return ApiError(str(exc), param=exc.field, code="invalid_value")
    return ApiError(f"The server failed on this request ({type(exc).__name__}); it keeps serving. Try again, or report it.",
                    type="server_error", code="internal_error", status=500)


def start_samples(playground: Playground, prompt: str | list[int], settings: GenerationSettings, n: int, session: str,
                  backend: str | None, variant: str | None, model: str | None, batched: bool = True,
                  owner: str = "") -> list[Generation]:
    """The runs that draw the n samples of one prompt (text or token ids). Sample i uses seed S + i (the convention
    of batched decoding), so sample 0 is exactly the run that `/generate` gives with seed S; S is drawn once when
    the request has none.

    They are one run of n samples (runs of MAX_SAMPLES, seeds continuing, were n ever larger), drawn as
    `Playground.start` draws them for the UI too: one batch on a local backend, one request after another on a
    serving engine. `batched=False` gives n runs of one (kept to measure the batch against). `owner`: the login
    the runs are saved under.
    """
    settings = settings.with_seed()
    text, ids = (prompt, None) if isinstance(prompt, str) else ("", prompt)
    size = MAX_SAMPLES if batched else 1
    return [playground.start(text, replace(settings, seed=settings.seed + first), session=session, backend=backend,
                             variant=variant, model=model, prompt_ids=ids, num_samples=min(size, n - first), owner=owner)
            for first in range(0, n, size)]


def served_name(playground: Playground, model: str | None) -> str | None:
    """The model a request names, as the playground knows it: the app's own model also answers to the name it was
    started with, besides its folder's name (`--model demo-zh` serves the folder demo-zh-gpt2 under both names)."""
    if isinstance(model, str) and model.strip() == playground.source.requested and model.strip() not in playground.model_choices():
        return playground.source.name
    return model


def saved_as(run: Generation | None) -> str:
    """A sentence for an error message: where what a failed run produced was saved ("" when it was not)."""
    ids = [str(r.run_id) for r in run.results if r.run_id is not None] if run is not None else []
    if not ids:
        return ""
    return f" What it produced is saved in the history as run{'s' if len(ids) > 1 else ''} {', '.join(ids)}."


class CompletionStream:
    """The answer to one request: OpenAI's completion JSON, whole or as streamed chunks.

    Choices are numbered in OpenAI's order, prompt by prompt and n samples each; a prompt's samples are the
    samples of its runs (one batch on a local backend), in order, or with best_of, the n best of its best_of samples
    (the highest mean log-probability per token first). Every sample drawn is saved and counted in the usage.
    """

    def __init__(self, request: CompletionRequest, runs: list[list[Generation]]):
        self.request = request
        self.runs = runs  # per prompt, the runs that draw its n samples
        self.id = f"cmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def batches(self) -> Iterator[tuple[int, Generation]]:
        """(choice index of the run's sample 0, run), in OpenAI's order."""
        index = 0
        for per_prompt in self.runs:
            for run in per_prompt:
                yield index, run
                index += run.num_samples

    def samples(self) -> Iterator[tuple[int, GenerationResult]]:
        """(choice index, sample) in OpenAI's order: prompt by prompt, n samples each (with best_of, the n best)."""
        n, index = self.request.n, 0
        for per_prompt in self.runs:
            results = [result for run in per_prompt for result in run.results]
            for result in best_of_n(results, n) if len(results) > n else results:
                yield index, result
                index += 1

    def envelope(self, model: str, choices: list[dict]) -> dict:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": model, "choices": choices}

    def usage(self) -> dict:
        prompt = sum(len(per_prompt[0].result.prompt_tokens) for per_prompt in self.runs)
        completion = sum(len(result.tokens) for per_prompt in self.runs for run in per_prompt for result in run.results)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def choice(self, index: int, result: GenerationResult) -> dict:
        """A whole sample: its text (after the prompt under echo), logprobs, finish reason, seed and history id."""
        request = self.request
        logprobs = None
        if request.logprobs is not None:
            records = (result.prompt_tokens if request.echo else []) + result.tokens
            logprobs = LogprobsWriter(request.logprobs, request.tokens_as_ids).write(records)
        text = (result.prompt + result.text) if request.echo else result.text
        return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason(result),
                "seed": result.settings.seed, "run_id": result.run_id}

    def whole(self) -> dict:
        choices = [self.choice(index, result) for index, result in self.samples()]
        return self.envelope(self.model, choices) | {"usage": self.usage()}

    @property
    def model(self) -> str:
        return self.runs[0][0].result.info.model


class SampleStream:
    """What one choice of a streamed answer has sent so far: the chunks of a sample, token by token.

    Its text deltas never split a character (`current_text` holds back a character until its last byte) and
    hold back a tail that could start a stop sequence, until it cannot; the last chunk sends what was held.
    """

    def __init__(self, request: CompletionRequest, run: Generation, sample: int, index: int):
        self.request, self.run, self.sample, self.index = request, run, sample, index
        self.writer = LogprobsWriter(request.logprobs or 0, request.tokens_as_ids)
        self.sent = ""  # the text sent so far (after the prompt)
        self.started = False  # under echo, the first chunk carries the prompt

    def chunk(self, record: TokenRecord) -> dict:
        """The choice's chunk for its next record."""
        text = self.run.current_text(self.sample)
        text = text[:len(text) - stop_prefix_held(text, self.run.settings.stop_sequences)]
        # What was sent stays sent: at a stop sequence's last token the text is cut before the stop, and the
        # held-back tail of that shorter text may reach before what was already sent (held "i" of "ie i", then
        # the stop cuts "cali|ie i" to "cali", whose "i" could begin another "ie i").
        delta = text[len(self.sent):]
        self.sent += delta
        records = [record]
        result = self.run.results[self.sample]
        if not self.started and self.request.echo:
            delta, records = result.prompt + delta, result.prompt_tokens + records
        self.started = True
        logprobs = self.writer.write(records) if self.request.logprobs is not None else None
        return {"index": self.index, "text": delta, "logprobs": logprobs, "finish_reason": None}

    def last(self) -> dict:
        """The choice's last chunk, once its run is saved: the held-back text, finish reason, seed and history id."""
        result = self.run.results[self.sample]
        text, logprobs = (result.text[len(self.sent):] if result.text.startswith(self.sent) else ""), None
        if not self.started and self.request.echo:  # a sample stopped before its first token still echoes its prompt
            text = result.prompt + text
            logprobs = self.writer.write(result.prompt_tokens) if self.request.logprobs is not None else None
        return {"index": self.index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason(result),
                "seed": result.settings.seed, "run_id": result.run_id}


def stop_prefix_held(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters of `text` could be the start of a stop sequence (streamed only once it is not)."""
    held = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), held, -1):
            if text.endswith(stop[:k]):
                held = k
                break
    return held


def sse(data: dict | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n".encode("utf-8")


def build_openai_app(playground: Playground, batched: bool = True) -> Starlette:
    """The /v1 routes over `playground` (the login is checked before they are reached: see OpenAIRoutes).
    `batched=False` draws a prompt's n samples one run after another (to measure the batch against)."""
    limiter = anyio.CapacityLimiter(playground.runs_at_once)  # /v1 runs streaming at once: they decode in one batch

    async def read_body(request: Request) -> object:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise ApiError(f"The request body is over {MAX_BODY_BYTES // 2**20} MB.", code="body_too_large", status=413)
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_BODY_BYTES:
                raise ApiError(f"The request body is over {MAX_BODY_BYTES // 2**20} MB.", code="body_too_large", status=413)
        try:
            return json.loads(bytes(data).decode("utf-8", "surrogatepass"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(f"The request body is not valid JSON ({str(exc)[:200]}).", code="invalid_json") from None

    async def completions(request: Request):
        try:
            parsed = parse_completion_request(await read_body(request))
            session = f"v1-{uuid.uuid4().hex}"
            # Starting may build a backend (an ONNX export takes a while): off the event loop.
            runs = await anyio.to_thread.run_sync(lambda: [
                start_samples(playground, prompt, parsed.settings, parsed.best_of, session, parsed.backend, parsed.variant,
                              served_name(playground, parsed.model), batched, owner=request.scope.get(USER_KEY) or "")
                for prompt in parsed.prompts])
        except Exception as exc:  # noqa: BLE001 - every failure becomes an OpenAI error object
            return error_response(api_error(exc))
        if parsed.stream and parsed.echo and parsed.logprobs is not None:
            for run in (run for per_prompt in runs for run in per_prompt):
                run.prompt_first = True  # its first chunk carries the prompt's logprobs (otherwise scored after the first token)
        answer = CompletionStream(parsed, runs)
        if parsed.stream:
            return StreamingResponse(stream_events(answer, session), media_type="text/event-stream",
                                     headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
        for _, run in answer.batches():
            try:
                await anyio.to_thread.run_sync(consume, run, session, limiter=limiter)
            except Exception as exc:  # noqa: BLE001
                error = api_error(exc)
                error.message += saved_as(run)
                return error_response(error)
        return JSONResponse(answer.whole())

    def consume(run: Generation, session: str) -> None:
        for _ in playground.stream(run, session):
            pass

    async def stream_events(answer: CompletionStream, session: str) -> AsyncIterator[bytes]:
        """Server-sent events: a chunk per token (its text delta and logprobs), a last chunk per sample with its
        finish reason, optional usage, then `data: [DONE]`. The samples of a batch step together, so their chunks
        interleave (each carries its choice's index); their last chunks follow once the batch is saved (they
        carry the history ids). A fault mid-run sends an error event, then [DONE]."""
        request, run = answer.request, None
        try:
            for first, run in answer.batches():
                streams = [SampleStream(request, run, i, first + i) for i in range(run.num_samples)]
                records = playground.stream_samples(run, session)
                try:
                    while True:
                        item = await anyio.to_thread.run_sync(next, records, None, limiter=limiter)
                        if item is None:
                            break
                        sample, record = item
                        yield sse(answer.envelope(run.result.info.model, [streams[sample].chunk(record)]))
                finally:
                    with anyio.CancelScope(shield=True):  # a disconnect cancels us: still close, which saves it as stopped
                        await anyio.to_thread.run_sync(records.close)
                for stream in streams:
                    yield sse(answer.envelope(run.result.info.model, [stream.last()]))
            if request.include_usage:
                yield sse(answer.envelope(answer.model, []) | {"usage": answer.usage()})
        except Exception as exc:  # noqa: BLE001 - the client reads it as an error event
            error = api_error(exc)
            error.message += saved_as(run)
            yield sse(error.to_dict())
        finally:
            playground.stop(session)
        yield sse("[DONE]")

    async def models(request: Request):
        return JSONResponse({"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": OWNER} for name in playground.model_choices()]})

    async def model(request: Request):
        name = request.path_params["name"]
        if served_name(playground, name) not in playground.model_choices():
            return error_response(ApiError(f"The model {name[:200]!r} is not offered here; GET /v1/models lists those that are.",
                                           param="model", code="model_not_found", status=404))
        return JSONResponse({"id": name, "object": "model", "created": 0, "owned_by": OWNER})

    async def http_error(request: Request, exc: HTTPException):
        return error_response(ApiError(f"{request.method} {request.url.path[:200]}: {exc.detail}", code=str(exc.status_code),
                                       status=exc.status_code))

    async def server_error(request: Request, exc: Exception):
        return error_response(api_error(exc))

    return Starlette(
        routes=[
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/models/{name:path}", model, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )


# ---- mounting on Gradio's server ------------------------------------------------------------------

def login_check(gradio_app, request: Request) -> tuple[str | None, str | None]:
    """(why a /v1 request may not pass the app's login or None when it may, the user it is logged in as or None).

    With `--auth`, a client logs in as it would with OpenAI: the API key is `USER:PASSWORD` (sent as
    `Authorization: Bearer USER:PASSWORD`; HTTP Basic works too), checked by the same password check as
    the login page, brake on guessing included. A browser already logged in to the UI passes with its
    session cookie.
    """
    auth = getattr(gradio_app, "auth", None)
    if auth is None:
        return None, None
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "basic":
        try:
            credentials = base64.b64decode(credentials, validate=True).decode("utf-8")
        except ValueError:
            credentials = ""
    if scheme.lower() in ("bearer", "basic") and ":" in credentials:
        user, _, password = credentials.partition(":")
        if callable(auth):
            if auth(user, password):
                return None, user
        elif user in auth and hmac.compare_digest(str(auth[user]).encode(), password.encode()):
            return None, user
        return "Wrong user or password. The API key is USER:PASSWORD of the app's login (--auth).", None
    cookie_id = getattr(gradio_app, "cookie_id", "")
    token = request.cookies.get(f"access-token-{cookie_id}") or request.cookies.get(f"access-token-unsecure-{cookie_id}")
    user = getattr(gradio_app, "tokens", {}).get(token) if token else None
    if user:
        return None, user
    return "This app asks for a login: send the API key USER:PASSWORD (Authorization: Bearer USER:PASSWORD).", None


class OpenAIRoutes:
    """ASGI middleware (given to Gradio's launch after the route guard) that serves `/v1` from the Starlette app
    that `build_demo` keeps on the Blocks as `openai_api`; everything else goes on to Gradio."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            path, root = scope.get("path", ""), scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root):]
            gradio_app = scope.get("app")
            api = getattr(getattr(gradio_app, "blocks", None), "openai_api", None)
            if api is not None and (path == "/v1" or path.startswith("/v1/")):
                refusal, user = login_check(gradio_app, Request(scope))
                scope[USER_KEY] = user  # whose the request's runs are (None without a login)
                if refusal is not None:
                    error = ApiError(refusal, type="invalid_request_error", code="invalid_api_key", status=401)
                    await error_response(error)(scope, receive, send)
                    return
                await api(scope, receive, send)
                return
        await self.app(scope, receive, send)
