"""A serving engine: any OpenAI-compatible server that returns logprobs (vLLM, llama.cpp, the playground's /v1).

The engine decodes; the playground shows what it returns. It sends the prompt as token ids of the
local model's tokenizer (the engine must serve the same model), streams `/v1/completions` with
`logprobs` and `echo`, and turns each streamed token into a token record: its id, the engine's
probability and the alternatives it gave, as many as it gave. Tokens come back as `token_id:N`
where the engine supports vLLM's `return_tokens_as_token_ids` (vLLM, the playground), otherwise as
text, mapped back to ids through the tokenizer's byte table.

What an engine does not return is never made up: the warped distribution a token was sampled from,
the full distribution (so entropy and a rank outside the alternatives), and, where the engine does
not echo prompt logprobs, the prompt's probabilities. It has no forward pass to look into (attention,
the Inside view): `unavailable` says so where one is asked for.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from typing import Iterator
from urllib.parse import urlparse

from ..config import GenerationSettings
from ..errors import PlaygroundError
from ..models import ModelSource
from ..records import Alternative, BackendInfo, TokenRecord
from .base import Engine

DEFAULT_TIMEOUT_S = 30.0  # the longest wait for the engine's next bytes (connect: 5 s)


class EngineError(PlaygroundError):
    """The engine could not be reached, was too slow, or sent something that is not an OpenAI completions stream."""


@dataclass
class EngineToken:
    """One token as an engine's stream reports it, before it becomes a token record."""

    token_id: int
    logprob: float | None  # the engine's log-probability of the token; None where it gave none
    top: list[tuple[int, float]] = field(default_factory=list)  # (token id, logprob), most likely first
    is_prompt: bool = False


def unavailable(what: str) -> EngineError:
    """The refusal of something only a forward pass gives: `what` is "attention" or "logits" (the Inside view)."""
    return EngineError(key={"attention": "remote.no_attention", "logits": "remote.no_logits"}[what])


class RemoteEngine(Engine):
    """Decoding in an OpenAI-compatible engine at `url` (its /v1 root or the server's root)."""

    def __init__(self, source: ModelSource, url: str, model: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S):
        import httpx

        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise EngineError(key="remote.bad_url", url=url)
        root = url.rstrip("/")
        self.base_url = root if root.endswith("/v1") else root + "/v1"
        self.source = source
        self.codec = source.codec
        self._by_bytes = {self.codec.token_bytes(i): i for i in reversed(range(len(self.codec)))
                          if not self.codec.is_silent(i)}
        self.timeout = httpx.Timeout(timeout_s, connect=5.0)
        self.timeout_s = timeout_s
        self.send_ids = True  # prompts as token ids until the engine refuses them (see _open)
        self.extra_body: dict = {}  # engine-specific fields added to every request (e.g. llama-cpp-python's repeat_penalty)
        self.engine_model = model or self._first_model()
        from transformers import AutoConfig

        self.info = BackendInfo(model=source.name, backend="remote", variant=self.engine_model,
                                provider=parsed.netloc, context_length=AutoConfig.from_pretrained(source.location).n_positions)

    def stream_records(self, prompt_ids: list[int], settings: GenerationSettings,
                       stop_event: threading.Event) -> Iterator[TokenRecord]:
        """The engine's tokens as token records (see `Engine.stream_records`): the probability is the engine's,
        `prob` (the sampled, warped distribution) and the entropy stay None, and a rank is known only within the
        alternatives it gave. OpenAI's convention adds the chosen token to the top-N when it is not among them:
        only the top-N asked for are kept."""
        codec, echoed, generated, last_id = self.codec, 0, 0, prompt_ids[-1]
        tokens = self._stream_tokens(prompt_ids, settings, stop_event)
        try:
            for token in tokens:
                if token.is_prompt:  # the echo: position i of our prompt, scored given the tokens before it
                    position, previous_id = echoed, prompt_ids[echoed - 1] if echoed else None
                    echoed += 1
                else:
                    position, previous_id = len(prompt_ids) + generated, last_id
                    generated, last_id = generated + 1, token.token_id
                top = token.top[:settings.top_alternatives]
                raw_prob = None if token.logprob is None else math.exp(token.logprob)
                yield TokenRecord(
                    position=position, token_id=token.token_id, text=codec.label(token.token_id, previous_id),
                    is_prompt=token.is_prompt, raw_prob=raw_prob, prob=raw_prob if token.is_prompt else None,
                    rank=next((r + 1 for r, (i, _) in enumerate(top) if i == token.token_id), None), entropy_bits=None,
                    top=[Alternative(i, codec.label(i, previous_id), math.exp(lp), codec.piece(i, previous_id)) for i, lp in top],
                    bytes=codec.piece(token.token_id, previous_id),
                )
        finally:
            tokens.close()

    # ---- talking to the engine ----------------------------------------------------------------------
    def _fault(self, exc: Exception) -> EngineError:
        """An httpx failure as a message that says what happened and what to do."""
        import httpx

        where = self.base_url
        if isinstance(exc, httpx.TimeoutException):
            return EngineError(key="remote.timeout", url=where, seconds=f"{self.timeout_s:g}")
        if isinstance(exc, httpx.ConnectError):
            return EngineError(key="remote.unreachable", url=where, error=str(exc)[:200])
        return EngineError(key="remote.broken", url=where, error=f"{type(exc).__name__}: {str(exc)[:200]}")

    def _first_model(self) -> str:
        import httpx

        try:
            reply = httpx.get(self.base_url + "/models", timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise self._fault(exc) from None
        models = self._json(reply).get("data") if reply.status_code == 200 else None
        if not isinstance(models, list) or not models or not isinstance(models[0], dict) or "id" not in models[0]:
            raise EngineError(key="remote.no_model", url=self.base_url, status=reply.status_code)
        return str(models[0]["id"])

    def _json(self, reply) -> dict:
        try:
            data = json.loads(reply.text)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise self._malformed(reply.text)
        return data

    def _malformed(self, text: str) -> EngineError:
        return EngineError(key="remote.malformed", url=self.base_url, text=repr(text[:120]))

    def request_body(self, prompt_ids: list[int], settings: GenerationSettings) -> dict:
        """The completions request for one run: the engine samples with these settings and the run's seed."""
        body = {"model": self.engine_model, "prompt": prompt_ids, "max_tokens": settings.max_new_tokens,
                "logprobs": settings.top_alternatives, "echo": True, "stream": True, "seed": settings.seed,
                "return_tokens_as_token_ids": True}
        if settings.do_sample:
            body |= {"temperature": settings.temperature, "top_p": settings.top_p}
            body["top_k"] = settings.top_k  # 0 = off; sent, since engines have their own defaults (llama-cpp-python: 40)
            if settings.typical_p != 1.0:
                body["typical_p"] = settings.typical_p
        else:
            body["temperature"] = 0.0
        if settings.repetition_penalty != 1.0:
            body["repetition_penalty"] = settings.repetition_penalty
        if settings.no_repeat_ngram_size:
            body["no_repeat_ngram_size"] = settings.no_repeat_ngram_size
        if settings.min_new_tokens:
            body["min_tokens"] = settings.min_new_tokens  # vLLM's names for the length controls
        if settings.ignore_eos:
            body["ignore_eos"] = True
        return body | self.extra_body

    def token_id(self, name: str) -> int:
        """An engine's token name as an id of the local tokenizer: `token_id:N`, or the token's text."""
        if name.startswith("token_id:") and name[9:].lstrip("-").isdigit():
            return int(name[9:])
        if name.startswith("bytes:"):  # OpenAI's spelling of bytes that are no whole character
            data = name[6:].encode("latin-1", "backslashreplace").decode("unicode_escape").encode("latin-1")
        else:
            data = name.encode("utf-8")
        if data in self._by_bytes:
            return self._by_bytes[data]
        ids = self.codec.tokenizer(name, add_special_tokens=False)["input_ids"] if name else []
        if len(ids) == 1:
            return ids[0]
        raise self._malformed(f"unknown token {name!r}")

    def _stream_tokens(self, prompt_ids: list[int], settings: GenerationSettings,
                       stop_event: threading.Event) -> Iterator[EngineToken]:
        """The engine's tokens for one run as it sends them: the prompt's first (when it echoes them), then each new one.

        Ends when the engine says it finished, or when the consumer stops iterating (which closes the stream).
        A stream that ends before the engine said it finished, or that is not JSON, is an EngineError.
        """
        import httpx

        echoed = 0  # how many of the first tokens are the prompt's echo (0: the engine did not echo)
        seen = 0
        finished = False
        try:
            reply_context = self._open(prompt_ids, settings)
            with reply_context as reply:
                if reply.status_code != 200:
                    reply.read()
                    raise EngineError(key="remote.refused", url=self.base_url,
                                      status=reply.status_code, error=_error_message(reply.text))
                for line in reply.iter_lines():
                    if stop_event.is_set():
                        return
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        finished = True
                        break
                    try:
                        chunk = json.loads(payload)
                    except ValueError:
                        raise self._malformed(payload) from None
                    if not isinstance(chunk, dict):
                        raise self._malformed(payload)
                    if "error" in chunk:
                        raise EngineError(key="remote.failed", url=self.base_url, error=_error_message(payload))
                    for choice in chunk.get("choices") or []:
                        if not isinstance(choice, dict):
                            raise self._malformed(payload)
                        for token in self._tokens(choice, payload):
                            # An echo starts with the prompt's first token, which has no logprob (no prefix).
                            if seen == 0 and token.logprob is None and token.token_id == prompt_ids[0]:
                                echoed = len(prompt_ids)
                            token.is_prompt = seen < echoed
                            seen += 1
                            yield token
                        if choice.get("finish_reason"):
                            finished = True
        except httpx.HTTPError as exc:
            raise self._fault(exc) from None
        if not finished:
            raise EngineError(key="remote.closed", url=self.base_url)

    def _open(self, prompt_ids: list[int], settings: GenerationSettings):
        """The streamed request (a context manager). Token ids are exact, but not every engine takes them
        (llama-cpp-python's server wants text): after a 400, 422 or 500, one retry with the prompt as text,
        remembered when it works."""
        import httpx

        url, body = self.base_url + "/completions", self.request_body(prompt_ids, settings)
        if not self.send_ids:
            return httpx.stream("POST", url, json=body | {"prompt": self.codec.decode(prompt_ids)}, timeout=self.timeout)
        reply = httpx.stream("POST", url, json=body, timeout=self.timeout)
        response = reply.__enter__()
        # 400/422 from most servers; llama-cpp-python's answers a validation error with 500.
        if response.status_code == 200 or response.status_code not in (400, 422, 500):
            return _Entered(reply, response)
        response.read()
        reply.__exit__(None, None, None)
        retry = httpx.stream("POST", url, json=body | {"prompt": self.codec.decode(prompt_ids)}, timeout=self.timeout)
        response = retry.__enter__()
        if response.status_code == 200:
            self.send_ids = False
        return _Entered(retry, response)

    def _tokens(self, choice: dict, payload: str) -> list[EngineToken]:
        logprobs = choice.get("logprobs")
        if logprobs is None:
            if choice.get("text"):
                raise EngineError(key="remote.no_logprobs", url=self.base_url)
            return []
        try:
            names, values = logprobs["tokens"], logprobs["token_logprobs"]
            tops = logprobs.get("top_logprobs") or [None] * len(names)
            out = []
            for name, value, top in zip(names, values, tops):
                alternatives = sorted(((self.token_id(k), float(v)) for k, v in (top or {}).items()),
                                      key=lambda a: -a[1])
                logprob = None if value is None else float(value)
                if logprob is not None and not math.isfinite(logprob) and logprob > 0:
                    raise ValueError(logprob)
                out.append(EngineToken(self.token_id(name), logprob, alternatives))
            return out
        except (KeyError, TypeError, ValueError, AttributeError):
            raise self._malformed(payload) from None


class _Entered:
    """An httpx stream already entered, usable in a `with` that exits it."""

    def __init__(self, context, response):
        self.context, self.response = context, response

    def __enter__(self):
        return self.response

    def __exit__(self, *exc):
        return self.context.__exit__(*exc)


def _error_message(text: str) -> str:
    """The message of an OpenAI error object, or the start of whatever the engine sent."""
    try:
        data = json.loads(text)
        message = data["error"]["message"] if isinstance(data.get("error"), dict) else data.get("error") or data.get("detail")
        return str(message)[:300]
    except (ValueError, AttributeError, KeyError, TypeError):
        return text[:300]
