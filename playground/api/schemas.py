"""The OpenAI completions request read into the playground's own terms (GenerationSettings), and the answers' JSON.

What maps: `max_tokens` -> max_new_tokens, `temperature` (0 = greedy), `top_p`, `stop` -> stop_sequences,
`seed`, `logprobs` -> top_alternatives, plus the playground's extras as extra body fields (`top_k`,
`typical_p`, `repetition_penalty`, `no_repeat_ngram_size`, `backend`, `variant`) and vLLM's
`return_tokens_as_token_ids`, `min_tokens` (-> min_new_tokens) and `ignore_eos` (the end-of-text token suppressed,
so a sample runs to max_tokens unless a stop sequence ends it); a prompt may be text or token ids. Values go through `GenerationSettings.from_user`, so a bad value gets the
UI's own message. `best_of` is OpenAI's: best_of samples drawn as one batch, the n with the highest mean
log-probability per token returned (`best_of_n`). What has no faithful equivalent is refused with a message that says
what to send instead, never silently ignored: `presence_penalty`/`frequency_penalty` (additive penalties; the
playground's is transformers' multiplicative `repetition_penalty`), `logit_bias` and `suffix`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..config import GenerationSettings, as_float, as_int
from ..errors import SettingsError
from ..records import GenerationResult, TokenRecord
from ..text import complete_prefix_length, escape_bytes

MAX_SAMPLES = 16  # n x number of prompts in one request
MAX_LOGPROBS = 100  # the most alternatives the decoding loop records per token
DEFAULT_MAX_TOKENS = 16  # OpenAI's default
LOGPROB_FLOOR = -9999.0  # stands for log(0), which JSON cannot carry (vLLM uses the same value)

# The playground's setting names as the OpenAI schema calls them (for an error's `param`).
OPENAI_NAMES = {"max_new_tokens": "max_tokens", "stop_sequences": "stop", "top_alternatives": "logprobs",
                "min_new_tokens": "min_tokens"}
EXTRAS = ("top_k", "typical_p", "repetition_penalty", "no_repeat_ngram_size")
KNOWN_FIELDS = frozenset({
    "model", "prompt", "max_tokens", "temperature", "top_p", "n", "stream", "stream_options", "logprobs", "echo", "stop",
    "seed", "presence_penalty", "frequency_penalty", "logit_bias", "best_of", "suffix", "user",
    "backend", "variant", "return_tokens_as_token_ids", "min_tokens", "ignore_eos", *EXTRAS,
})


class ApiError(Exception):
    """An error in OpenAI's shape: {"error": {"message", "type", "param", "code"}} with an HTTP status."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.param, self.code, self.status, self.type = message, param, code, status, type

    def to_dict(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def settings_error(exc: SettingsError) -> ApiError:
    """The UI's message, with `param` naming the OpenAI field of the setting the error is about."""
    name = exc.field
    return ApiError(str(exc), param=OPENAI_NAMES.get(name, name), code="invalid_value")


@dataclass(frozen=True)
class CompletionRequest:
    """One POST /v1/completions, checked: the prompts, the settings every sample shares, and how to answer."""

    model: str | None
    prompts: list[str | list[int]]  # text, or token ids of the model's tokenizer
    settings: GenerationSettings  # seed None: one is drawn per prompt, and sample i uses seed + i
    n: int  # samples returned per prompt
    best_of: int  # samples drawn per prompt (>= n): the n best are returned
    logprobs: int | None  # top-N alternatives per token in the answer; None: no logprobs
    echo: bool
    stream: bool
    include_usage: bool
    backend: str | None
    variant: str | None
    tokens_as_ids: bool  # tokens named "token_id:N" (vLLM's return_tokens_as_token_ids), exact for any bytes


def _bool(body: dict, name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ApiError(f"{name} must be true or false; got {value!r}.", param=name, code="invalid_type")
    return value


def _refuse_unless_default(body: dict, name: str, default_values: tuple, why: str) -> None:
    value = body.get(name)
    if value is None or (not isinstance(value, bool) and any(value == d for d in default_values)):
        return
    raise ApiError(f"{name}={value!r} is not supported: {why}", param=name, code="unsupported_parameter")


def parse_completion_request(body: Any) -> CompletionRequest:
    """Read a request body (decoded JSON) or raise ApiError naming the field and how to fix it."""
    if not isinstance(body, dict):
        raise ApiError("The request body must be a JSON object, as in OpenAI's completions API.", code="invalid_body")
    unknown = sorted(str(k) for k in set(body) - KNOWN_FIELDS)
    if unknown:
        raise ApiError(f"Unknown field(s): {', '.join(unknown)[:300]}. Known fields: {', '.join(sorted(KNOWN_FIELDS))}.",
                       param=unknown[0][:100], code="unknown_parameter")
    _refuse_unless_default(body, "presence_penalty", (0,), "the playground has no additive penalties; send "
                           "repetition_penalty (transformers' multiplicative penalty, 1 = off, e.g. 1.2) as an extra field.")
    _refuse_unless_default(body, "frequency_penalty", (0,), "the playground has no additive penalties; send "
                           "repetition_penalty (transformers' multiplicative penalty, 1 = off, e.g. 1.2) as an extra field.")
    _refuse_unless_default(body, "logit_bias", ({},), "leave it out; the playground does not bias tokens.")
    _refuse_unless_default(body, "suffix", ("",), "GPT-2 only continues text; leave it out.")

    prompt = body.get("prompt", "")
    if isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = list(prompt)
    elif isinstance(prompt, list) and prompt and all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
        prompts = [list(prompt)]  # one prompt as token ids of the model's tokenizer
    elif isinstance(prompt, list) and prompt and all(isinstance(p, list) and p and all(
            isinstance(i, int) and not isinstance(i, bool) for i in p) for p in prompt):
        prompts = [list(p) for p in prompt]
    else:
        raise ApiError(f"prompt must be a string, a non-empty list of strings, or token ids; got {type(prompt).__name__}.",
                       param="prompt", code="invalid_type")

    n = as_int("n", body["n"]) if body.get("n") is not None else 1
    if not 1 <= n <= MAX_SAMPLES:
        raise ApiError(f"n={n!r} is out of range; allowed: [1, {MAX_SAMPLES}].", param="n", code="invalid_value")
    try:
        best_of = as_int("best_of", body["best_of"]) if body.get("best_of") is not None else n
    except SettingsError as exc:
        raise settings_error(exc) from None
    if not n <= best_of <= MAX_SAMPLES:
        raise ApiError(f"best_of={best_of!r} is out of range; allowed: [n, {MAX_SAMPLES}] (n={n}): best_of samples are drawn "
                       "and the n best returned.", param="best_of", code="invalid_value")
    count = "n" if best_of == n else "best_of"
    if best_of * len(prompts) > MAX_SAMPLES:
        raise ApiError(f"{len(prompts)} prompts x {count}={best_of} is {best_of * len(prompts)} samples; at most {MAX_SAMPLES} "
                       "per request.", param=count, code="invalid_value")
    if best_of > n and _bool(body, "stream"):  # as OpenAI: the best are known only when every sample has ended
        raise ApiError(f"best_of={best_of} cannot be streamed: the best {n} are known only when all {best_of} have ended. "
                       "Leave out stream, or best_of.", param="best_of", code="invalid_value")

    logprobs = body.get("logprobs")
    if logprobs is not None:
        logprobs = as_int("logprobs", logprobs)
        if not 0 <= logprobs <= MAX_LOGPROBS:
            raise ApiError(f"logprobs={logprobs!r} is out of range; allowed: [0, {MAX_LOGPROBS}].", param="logprobs",
                           code="invalid_value")

    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    values: dict[str, Any] = {
        "max_new_tokens": body.get("max_tokens", DEFAULT_MAX_TOKENS),
        "top_p": body.get("top_p"),
        "stop_sequences": stop,
        "seed": body.get("seed"),
        "top_k": 0 if body.get("top_k") is None else body["top_k"],  # OpenAI has no top-k: off unless asked for
        **{name: body.get(name) for name in EXTRAS if name != "top_k"},
        "min_new_tokens": body.get("min_tokens"),
        "ignore_eos": body.get("ignore_eos"),
    }
    if logprobs:
        values["top_alternatives"] = logprobs
    temperature = body.get("temperature")
    if temperature is not None:
        try:
            temperature = as_float("temperature", temperature)
        except SettingsError as exc:
            raise settings_error(exc) from None
        if temperature == 0:  # OpenAI's greedy
            values["do_sample"] = False
        else:
            values["temperature"] = temperature
    try:
        settings = GenerationSettings.from_user(**values)
    except SettingsError as exc:
        raise settings_error(exc) from None

    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict) or set(stream_options) - {"include_usage"}:
        raise ApiError("stream_options may only hold include_usage (true or false).", param="stream_options",
                       code="invalid_value")
    for name in ("backend", "variant", "model"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise ApiError(f"{name} must be a string; got {type(body[name]).__name__}.", param=name, code="invalid_type")
    return CompletionRequest(
        model=body.get("model") or None, prompts=prompts, settings=settings, n=n, best_of=best_of, logprobs=logprobs,
        echo=_bool(body, "echo"), stream=_bool(body, "stream"), include_usage=_bool(stream_options, "include_usage"),
        backend=body.get("backend") or None, variant=body.get("variant") or None,
        tokens_as_ids=_bool(body, "return_tokens_as_token_ids"),
    )


# ---- answers -----------------------------------------------------------------------------------

def logprob(p: float | None) -> float | None:
    if p is None:
        return None
    return math.log(p) if p > 0 else LOGPROB_FLOOR


def mean_logprob(result: GenerationResult) -> float:
    """A sample's mean log-probability per generated token, by the model's own probabilities (raw_prob), as OpenAI's
    best_of ranks samples; a sample with no token ranks last."""
    if not result.tokens:
        return -math.inf
    return sum(logprob(t.raw_prob) for t in result.tokens) / len(result.tokens)


def best_of_n(results: list[GenerationResult], n: int) -> list[GenerationResult]:
    """The n samples with the highest mean log-probability per token, best first (equal ones in sample order)."""
    return sorted(results, key=lambda r: -mean_logprob(r))[:n]


def finish_reason(result: GenerationResult) -> str | None:
    """OpenAI's two reasons: `length` for max_tokens, `stop` for end-of-text, a stop sequence or a stopped run."""
    if result.finish_reason == "running":
        return None
    return "length" if result.finish_reason == "length" else "stop"


class LogprobsWriter:
    """Builds OpenAI's `logprobs` object ({tokens, token_logprobs, top_logprobs, text_offset}) record by record.

    Probabilities are the model's own (raw_prob: before temperature and the warpers), as vLLM returns by
    default; the top alternatives are the `top_n` most likely, plus the chosen token when it is not among
    them, as OpenAI does. `text_offset` counts characters of the answer's text (which starts with the
    prompt under `echo`).
    """

    def __init__(self, top_n: int, tokens_as_ids: bool):
        self.top_n, self.tokens_as_ids = top_n, tokens_as_ids
        self._data = b""  # the bytes of the records seen so far

    def name(self, token_id: int, text: str) -> str:
        return f"token_id:{token_id}" if self.tokens_as_ids else text

    def write(self, records: list[TokenRecord]) -> dict:
        out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for record in records:
            out["text_offset"].append(len(escape_bytes(self._data[:complete_prefix_length(self._data)])))
            self._data += record.bytes
            out["tokens"].append(self.name(record.token_id, record.text))
            out["token_logprobs"].append(logprob(record.raw_prob))
            if record.raw_prob is None:  # the prompt's first token has no prefix to be scored by
                out["top_logprobs"].append(None)
                continue
            top = {self.name(a.token_id, a.text): logprob(a.prob) for a in record.top[:self.top_n]}
            top.setdefault(self.name(record.token_id, record.text), logprob(record.raw_prob))
            out["top_logprobs"].append(top)
        return out
