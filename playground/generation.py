"""The one decoding loop: prompt -> backend -> transformers' logits processors -> token records with probabilities."""

from __future__ import annotations

import math
import threading
import uuid
from contextlib import contextmanager
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Iterator, NamedTuple

import numpy as np
import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from .backends.base import Backend, BackendInfo, BatchUnsupported
from .config import MAX_SEED, GenerationSettings, check_prompt
from .errors import Notice, SettingsError
from .models import ModelSource
from .text import TokenCodec, Unit, complete_prefix_length, escape_bytes, group_units, hex_bytes

LN2 = math.log(2.0)
MAX_SAMPLES = 16  # samples of one prompt drawn at once (num_return_sequences)
PROMPT_CHUNK = 64  # prompt positions whose statistics are computed together


class Alternative(NamedTuple):
    """A token the model could have chosen at a position, with its raw probability."""

    token_id: int
    text: str  # display text: the characters, or \xNN for bytes that are not a whole character
    prob: float
    bytes: bytes  # exactly what it would have added to the text


@dataclass
class TokenRecord:
    """One token of a run with what the model thought of it.

    For prompt tokens the probabilities are those of the token given its prefix (None for the first,
    which has no prefix). For generated tokens, `prob` is the probability in the distribution that was
    actually sampled from (after penalties and warpers) and `raw_prob` the model's own softmax.
    """

    position: int  # index in the sequence the model saw
    token_id: int
    text: str  # display text: its characters, \xNN for bytes that are not a whole character, or a special token's name
    is_prompt: bool
    raw_prob: float | None
    prob: float | None
    rank: int | None  # 1 = the model's most likely token
    entropy_bits: float | None  # of the model's raw distribution at this position
    top: list[Alternative] = field(default_factory=list)  # most likely first
    bytes: bytes = b""  # exactly what this token added to the text (empty for [CLS], <|endoftext|>, ...)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["bytes"] = list(self.bytes)
        data["top"] = [{"token_id": a.token_id, "text": a.text, "prob": a.prob, "bytes": list(a.bytes)} for a in self.top]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TokenRecord":
        # Runs saved before records had bytes: recover them from the text where it is whole characters.
        def raw(item: dict) -> bytes:
            return bytes(item["bytes"]) if "bytes" in item else item.get("text", "").encode("utf-8", errors="replace")

        top = [Alternative(a["token_id"], a["text"], a["prob"], raw(a)) for a in data.get("top", [])]
        return cls(**(data | {"top": top, "bytes": raw(data)}))


@dataclass
class GenerationResult:
    """A run as it stands: filled in while streaming, complete once the loop returns."""

    prompt: str
    settings: GenerationSettings
    info: BackendInfo
    prompt_tokens: list[TokenRecord] = field(default_factory=list)
    tokens: list[TokenRecord] = field(default_factory=list)
    text: str = ""  # the generated text, cut before a stop sequence
    finish_reason: str = "running"  # length, eos, stop_sequence, stopped
    notices: list[str] = field(default_factory=list)
    dropped_prompt_tokens: int = 0
    ttft_ms: float | None = None
    decode_ms: float = 0.0
    run_id: int | None = None  # set once the run is saved to the history
    parent_run_id: int | None = None  # for a branch: the run it branched from ...
    branch_position: int | None = None  # ... and the sequence position of the swapped token
    group_id: str | None = None  # runs drawn together (N samples, a sweep) share one; None for a run of one
    sample_index: int | None = None  # this run's place in its group (its seed is the group's seed + this, per cell)

    @property
    def sequence_logprob(self) -> float:
        """Sum of the natural log-probabilities of the generated tokens under the model's raw distribution
        (not the warped one: so samples drawn at different temperatures compare on one scale)."""
        return sum(math.log(max(t.raw_prob, 1e-45)) for t in self.tokens if t.raw_prob is not None)

    @property
    def perplexity(self) -> float | None:
        """exp(mean NLL) of the generated tokens under the model's raw distribution; None before the first token."""
        return _perplexity(self.tokens)

    @property
    def prompt_perplexity(self) -> float | None:
        """exp(mean NLL) of the prompt tokens that have a prefix; None for a prompt of one token."""
        return _perplexity(self.prompt_tokens)

    @property
    def decode_tokens_per_s(self) -> float | None:
        """Tokens after the first over the time spent producing them (the first token's cost is the prefill)."""
        steps = len(self.tokens) - 1
        return steps / (self.decode_ms / 1000) if steps > 0 and self.decode_ms > 0 else None

    def units(self) -> list[tuple[Unit, list[TokenRecord]]]:
        """Prompt and output tokens grouped into whole characters (see playground.text), each with its records."""
        records = self.prompt_tokens + self.tokens
        return [(unit, records[unit.start:unit.end]) for unit in group_units([r.bytes for r in records])]

    def units_json(self) -> list[dict]:
        """The units for the API: their text, the positions of their tokens, and their joint probability."""
        out = []
        for unit, records in self.units():
            probs = [r.raw_prob for r in records]
            joint = math.prod(probs) if all(p is not None for p in probs) else None
            out.append({"text": unit.text, "positions": [r.position for r in records], "complete": unit.complete,
                        "is_prompt": records[-1].is_prompt, "joint_prob": joint})
        return out

    def metrics(self) -> dict:
        return {
            "ttft_ms": self.ttft_ms,
            "decode_ms": self.decode_ms,
            "decode_tokens_per_s": self.decode_tokens_per_s,
            "prompt_token_count": len(self.prompt_tokens),
            "new_token_count": len(self.tokens),
            "dropped_prompt_tokens": self.dropped_prompt_tokens,
            "prompt_perplexity": self.prompt_perplexity,
            "sequence_logprob": self.sequence_logprob,
            "perplexity": self.perplexity,
        }

    def to_dict(self) -> dict:
        return {
            "prompt": self.prompt,
            "text": self.text,
            "finish_reason": self.finish_reason,
            "model": self.info.model,
            "backend": self.info.backend,
            "variant": self.info.variant,
            "provider": self.info.provider,
            "settings": self.settings.to_dict(),
            "metrics": self.metrics(),
            "notices": list(self.notices),
            "run_id": self.run_id,
            "parent_run_id": self.parent_run_id,
            "branch_position": self.branch_position,
            "group_id": self.group_id,
            "sample_index": self.sample_index,
            "prompt_tokens": [t.to_dict() for t in self.prompt_tokens],
            "tokens": [t.to_dict() for t in self.tokens],
            "units": self.units_json(),
        }


def _perplexity(records: list[TokenRecord]) -> float | None:
    """exp(mean NLL) of the records that have a raw probability; None when none has."""
    probs = [t.raw_prob for t in records if t.raw_prob is not None]
    if not probs:
        return None
    return math.exp(-sum(math.log(max(p, 1e-45)) for p in probs) / len(probs))


def result_from_saved(run: dict, codec: TokenCodec | None = None) -> GenerationResult:
    """A GenerationResult from a history row (JSON columns decoded), for the views that show a stored run.

    Runs saved before records carried bytes get them back from `codec` (the run's model), so their
    multi-byte characters show whole instead of as U+FFFD.
    """
    settings = dict(run.get("settings") or {})
    settings["stop_sequences"] = tuple(settings.get("stop_sequences") or ())
    metrics = run.get("metrics") or {}
    info = BackendInfo(model=run.get("model") or "?", backend=run.get("backend") or "?", variant=run.get("variant") or "?",
                       provider=run.get("provider") or "?", context_length=0)
    tokens = run.get("tokens") or {}
    if codec is not None and any("bytes" not in t for part in tokens.values() for t in part):
        tokens = _with_bytes(tokens, codec)
    return GenerationResult(
        prompt=run.get("prompt") or "",
        settings=GenerationSettings(**settings),
        info=info,
        prompt_tokens=[TokenRecord.from_dict(t) for t in tokens.get("prompt", [])],
        tokens=[TokenRecord.from_dict(t) for t in tokens.get("output", [])],
        text=run.get("output") or "",
        finish_reason=metrics.get("finish_reason") or run.get("status") or "?",
        notices=list(metrics.get("notices") or []),
        dropped_prompt_tokens=metrics.get("dropped_prompt_tokens") or 0,
        ttft_ms=metrics.get("ttft_ms"),
        decode_ms=metrics.get("decode_ms") or 0.0,
        run_id=run.get("id"),
        parent_run_id=run.get("parent_run_id"),
        branch_position=run.get("branch_position"),
        group_id=run.get("group_id"),
        sample_index=run.get("sample_index"),
    )


def _with_bytes(tokens: dict, codec: TokenCodec) -> dict:
    """Fill in the bytes and display texts of stored records (and their alternatives) from their token ids."""
    records = [dict(t) for t in tokens.get("prompt", [])] + [dict(t) for t in tokens.get("output", [])]
    previous = None
    for record in records:
        if record["token_id"] < len(codec):
            record["bytes"] = list(codec.piece(record["token_id"], previous))
            record["text"] = codec.label(record["token_id"], previous)
            record["top"] = [a | {"bytes": list(codec.piece(a["token_id"], previous)), "text": codec.label(a["token_id"], previous)}
                             for a in record.get("top", []) if a["token_id"] < len(codec)]
        previous = record["token_id"]
    n = len(tokens.get("prompt", []))
    return {"prompt": records[:n], "output": records[n:]}


def build_logits_processors(settings: GenerationSettings) -> LogitsProcessorList:
    """transformers' own processors, in the order `generate` applies them; warpers only when sampling."""
    processors = LogitsProcessorList()
    if settings.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(penalty=settings.repetition_penalty))
    if settings.no_repeat_ngram_size > 0:
        processors.append(NoRepeatNGramLogitsProcessor(settings.no_repeat_ngram_size))
    if settings.do_sample:
        if settings.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_k > 0:
            processors.append(TopKLogitsWarper(top_k=settings.top_k))
        if settings.top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p=settings.top_p))
        if settings.typical_p < 1.0:
            processors.append(TypicalLogitsWarper(mass=settings.typical_p))
    return processors


TOP_K_STRIDE = 64  # every 64th logit is the sample that sets `top_k`'s threshold


def top_k(x: np.ndarray, k: int) -> tuple[list[list[float]], list[list[int]]]:
    """The k largest logits of each row of `x` (N, V) and their ids, largest first, as lists.

    Exact, in about a third of `torch.topk`'s time for a GPT-2 row here: the k-th largest of every 64th
    logit is a threshold t that at least k logits reach, so the k largest are among the logits >= t
    (any logit below t is smaller than those k); one compare over the row finds those (a few hundred),
    and only they are sorted.
    """
    values, ids = [], []
    for row in x:
        if row.shape[0] >= 4 * k * TOP_K_STRIDE:
            sample = row[::TOP_K_STRIDE]  # (V / 64,)
            threshold = np.partition(sample, sample.shape[0] - k)[sample.shape[0] - k]  # the k-th largest of the sample
            candidates = np.flatnonzero(row >= threshold)  # (>= k,)
        else:
            candidates = np.arange(row.shape[0])
        order = candidates[np.argsort(-row[candidates], kind="stable")[:k]]  # (k,) largest first, lower id first on ties
        values.append(row[order].tolist())
        ids.append(order.tolist())
    return values, ids


@dataclass
class StepStats:
    """The model's raw distributions at one decoding step, for all N rows of a batch in one vectorised pass.

    This runs once per step. A backend that computes the statistics with the logits (`Backend.statistics`:
    ONNX exports since format 8, in the graph) hands them over in `given`, and only a few small arrays
    are read here. Otherwise they are computed from the logits: the top-k first (`top_k`: a threshold
    from a sample, then a sort of the few logits above it), whose first value is each row's max; then
    three passes over the vocabulary (exp of the shifted logits, their sum, their dot product with
    the logits), numpy on a view of the logits. Few calls matter more than few flops here: a decoding
    step streams the model's weights through the caches, so every call after it starts cold (a numpy
    call costs 40-50 us more right after a step than in a warm loop; README, "Loop overhead").
    """

    logits: np.ndarray  # (N, V) raw, finite
    lse: list[float]  # (N,) log sum exp(logits)
    entropy_bits: list[float]  # (N,)
    top_probs: list[list[float]]  # (N, k)
    top_ids: list[list[int]]  # (N, k)

    @classmethod
    def of(cls, logits: torch.Tensor, k: int, scratch: np.ndarray, given: tuple | None = None) -> "StepStats":
        """`logits` (N, V); `scratch` a (>= N, V) float32 buffer reused across steps (no fresh 200 kB array per row);
        `given`: the backend's (top logits (N, k), their ids (N, k), lse (N,), mean logit (N,)) for these rows."""
        x = logits.numpy()  # (N, V), a view (a stride-0 view at the first step, when every row is the prompt's)
        if given is not None:
            top_logits, ids, lse, mean = given
            return cls(x, lse.tolist(), ((lse - mean) / LN2).tolist(),
                       np.exp(top_logits - lse[:, None]).tolist(), ids.tolist())
        n = x.shape[0]
        top_logits, top_ids = top_k(x, k)  # (N, k) lists, largest first: the first is each row's max (k >= 1)
        peak = np.array([row[0] for row in top_logits], dtype=np.float32)[:, None]  # (N, 1)
        unnormalised = np.subtract(x, peak, out=scratch[:n])  # (N, V)
        np.exp(unnormalised, out=unnormalised)  # = Z * p
        z = unnormalised.sum(axis=1)  # (N,) pairwise float32 sums: relative error ~1e-7 over 50k terms
        weighted = np.einsum("nv,nv->n", unnormalised, x)  # (N,) = Z * sum p x
        # H = -sum p (x - lse) = lse - sum p x
        lse = [float(m) + math.log(float(zz)) for m, zz in zip(peak[:, 0], z)]
        entropy_bits = [(l - float(w) / float(zz)) / LN2 for l, w, zz in zip(lse, weighted, z)]
        top_probs = [[math.exp(v - l) for v in row] for row, l in zip(top_logits, lse)]
        return cls(x, lse, entropy_bits, top_probs, top_ids)

    def prob(self, row: int, token_id: int) -> float:
        return math.exp(float(self.logits[row, token_id]) - self.lse[row])

    def rank(self, row: int, token_id: int) -> int:
        top_ids = self.top_ids[row]
        if token_id in top_ids:
            return top_ids.index(token_id) + 1
        logits = self.logits[row]
        return int(np.count_nonzero(logits > logits[token_id])) + 1

    def top(self, row: int, codec: TokenCodec, previous_id: int | None) -> list[Alternative]:
        return [Alternative(i, codec.label(i, previous_id), p, codec.piece(i, previous_id))
                for i, p in zip(self.top_ids[row], self.top_probs[row])]


def check_num_samples(value) -> int:
    """How many samples one run may draw at once: a whole number from 1 to MAX_SAMPLES."""
    from .config import as_int

    count = as_int("num_return_sequences", value)
    if not 1 <= count <= MAX_SAMPLES:
        raise SettingsError(f"num_return_sequences={count} is out of range: ask for 1 to {MAX_SAMPLES} samples at once.",
                            key="batch.num_samples", value=count, most=MAX_SAMPLES)
    return count


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample `index` of a batch started with `seed` (the convention every part of the app shares)."""
    return seed + index


class Generation:
    """One run of N samples of one prompt (N = 1 by default). Iterate it to stream TokenRecords (for N > 1,
    iterate `samples()` to get (sample index, record) pairs); `results[i]` holds sample i, complete when
    iteration ends, and `result` is sample 0.

    Sample i samples with its own generator seeded `seed + i`, recorded in `results[i].settings.seed`, so
    it equals a run of one sample with that seed. The prompt is run once; its cache is copied to N rows
    and the N rows are stepped together.

    `stop_event` (a threading.Event) ends the run between two steps and keeps what was produced.

    Text is assembled from each token's exact bytes (playground.text), never by decoding a token on
    its own: the streamed text holds back a character until its last byte has arrived, stop
    sequences are matched on bytes (so a match always starts at a character boundary), and a
    character split between the prompt and the output (a branch at its 2nd byte) belongs to the output.
    """

    def __init__(
        self,
        backend: Backend,
        source: ModelSource,
        prompt: str,
        settings: GenerationSettings,
        stop_event: threading.Event | None = None,
        ignore_eos: bool = False,
        prompt_ids: list[int] | None = None,
        num_samples: int = 1,
        group_id: str | None = None,
    ):
        self.backend = backend
        self.source = source
        self.codec: TokenCodec = source.codec
        self.num_samples = check_num_samples(num_samples)
        self.settings = settings.validate().validate_for_context(backend.info.context_length).with_seed()
        if sample_seed(self.settings.seed, self.num_samples - 1) > MAX_SEED:
            raise SettingsError(f"seed={self.settings.seed} leaves no room for {self.num_samples} samples (sample i uses seed + i); "
                                f"use a seed of at most {MAX_SEED - self.num_samples + 1}.",
                                key="batch.seed_room", seed=self.settings.seed, count=self.num_samples,
                                most=MAX_SEED - self.num_samples + 1)
        self.stop_event = stop_event or threading.Event()
        self.ignore_eos = ignore_eos
        # Explicit token ids (a branch) are used as they are: re-tokenizing their text could merge differently.
        self._given_prompt_ids = list(prompt_ids) if prompt_ids else None
        self._prompt_tail = b""  # trailing bytes of the prompt that do not finish a character yet
        if self._given_prompt_ids:
            data = b"".join(self.codec.pieces(self._given_prompt_ids))
            cut = complete_prefix_length(data)
            prompt, self._prompt_tail = escape_bytes(data[:cut]), data[cut:]
        prompt = check_prompt(prompt)
        self.results = [GenerationResult(prompt=prompt, settings=replace(self.settings, seed=sample_seed(self.settings.seed, i)),
                                         info=backend.info) for i in range(self.num_samples)]
        self.result = self.results[0]
        # Samples of one batch form a group (a sweep passes one id for all its cells); a run of one has none.
        self.group_id = group_id or (uuid.uuid4().hex[:16] if self.num_samples > 1 else None)
        if self.group_id is not None:
            for i, result in enumerate(self.results):
                result.group_id, result.sample_index = self.group_id, i
        self._outputs = [bytearray() for _ in range(self.num_samples)]  # each sample's generated bytes

    # The prompt window policy: keep the most recent tokens that leave room for max_new_tokens.
    def _prompt_ids(self) -> list[int]:
        codec = self.codec
        ids = self._given_prompt_ids or codec.encode(self.result.prompt)
        if not ids:
            ids = [codec.start_id]
            start = codec.label(codec.start_id)
            self.result.notices.append(Notice(f"Empty prompt: generation starts from the {start} token.",
                                              key="notice.empty_prompt", token=start))
        if codec.unk_id is not None and codec.unk_id in ids and not self._given_prompt_ids:
            missing = sorted({c for c in self.result.prompt if codec.unk_id in codec.encode(c)[-1:]})
            chars = f"{' '.join(missing[:20])}{' …' if len(missing) > 20 else ''}"
            self.result.notices.append(Notice(
                f"{ids.count(codec.unk_id)} prompt tokens are {codec.label(codec.unk_id)}: this model's vocabulary lacks "
                f"{chars}. The model sees an unknown token there.",
                key="notice.unknown_chars", count=ids.count(codec.unk_id), unk=codec.label(codec.unk_id), chars=chars,
            ))
        room = self.backend.info.context_length - self.settings.max_new_tokens
        if len(ids) > room:
            self.result.dropped_prompt_tokens = len(ids) - room
            self.result.notices.append(Notice(
                f"The prompt has {len(ids)} tokens but only {room} fit beside {self.settings.max_new_tokens} new tokens "
                f"in the {self.backend.info.context_length}-token context: the first {len(ids) - room} tokens were dropped.",
                key="notice.prompt_dropped", tokens=len(ids), room=room, new=self.settings.max_new_tokens,
                context=self.backend.info.context_length, dropped=len(ids) - room,
            ))
            # A start token the model was trained to see first ([CLS]) stays first.
            keep_start = codec.bos_id is not None and ids[0] == codec.bos_id
            ids = ([ids[0]] + ids[len(ids) - room + 1:]) if keep_start else ids[-room:]
        return ids

    def _hit_stop_sequence(self, sample: int, last_piece: bytes) -> bool:
        stops = self.settings.stop_sequences
        if not stops:
            return False
        # Only a match that ends in the newest token is new: search a tail just long enough to hold one
        # (without copying the whole output every step).
        window = max(len(s.encode("utf-8")) for s in stops) + len(last_piece)
        tail = (self._prompt_tail + bytes(self._outputs[sample][-window:]))[-window:]
        return any(s.encode("utf-8") in tail for s in stops)

    def _text_bytes(self, sample: int) -> bytes:
        """The output's bytes, cut before the first stop sequence (matched on bytes: always at a character boundary)."""
        data = self._prompt_tail + bytes(self._outputs[sample])
        cut = min((data.find(s.encode("utf-8")) for s in self.settings.stop_sequences if s.encode("utf-8") in data), default=-1)
        return data[:cut] if cut >= 0 else data

    def current_text(self, sample: int = 0) -> str:
        """A sample's generated text so far, cut before any stop sequence; a character whose last bytes have not
        been generated yet is held back, so the stream never shows half a character."""
        data = self._text_bytes(sample)
        return escape_bytes(data[: complete_prefix_length(data)])

    def _finish_text(self, sample: int) -> None:
        result = self.results[sample]
        data = self._text_bytes(sample)
        cut = complete_prefix_length(data)
        result.text = escape_bytes(data[:cut])
        if cut < len(data):
            result.notices.append(Notice(
                f"The output ends inside a character: its last bytes ({hex_bytes(data[cut:])}) are not in the text. "
                "The token records keep them; a few more tokens would complete the character.",
                key="notice.cut_character", bytes=hex_bytes(data[cut:]),
            ))

    def _given_statistics(self, cache, k: int) -> tuple | None:
        """The backend's own statistics of its latest run on `cache` (`Backend.statistics`), when it has k alternatives."""
        given = self.backend.statistics(cache)
        return given if given is not None and given[0].shape[-1] == k else None

    def _choose(self, logits, given, processors, sequence, n, rngs, live, k, scratch) -> tuple[list[int], list[float] | None, StepStats]:
        """Pick each row's next token from `logits` (N, V); returns (token ids, their probabilities in the warped
        distributions or None when nothing warps them, raw stats of all rows; `given`: the backend's, see StepStats).
        The processors see `sequence[:, :n]`; row r samples with `rngs[live[r]]` (both only looked at when something
        penalises, warps or samples)."""
        stats = StepStats.of(logits, k, scratch, given)
        if not processors and not self.settings.do_sample:
            return [row[0] for row in stats.top_ids], None, stats  # greedy on the raw distribution: the top-1 is the argmax
        scores = processors(sequence[:, :n], logits.clone())  # (N, V), penalised and warped, each row on its own history
        warped_probs = torch.softmax(scores, dim=-1)  # (N, V)
        if self.settings.do_sample:
            # One draw per row from that row's own generator: row i consumes exactly what a run of one would.
            tokens = [int(torch.multinomial(warped_probs[r], 1, generator=rng)) for r, rng in enumerate(rngs[s] for s in live)]
        else:
            tokens = scores.argmax(-1).tolist()
        chosen = torch.tensor(tokens)[:, None]  # (N, 1)
        return tokens, warped_probs.gather(1, chosen)[:, 0].tolist(), stats

    def __iter__(self) -> Iterator[TokenRecord]:
        """Stream the records (of every sample, in step order; with one sample, simply its tokens)."""
        for _, record in self.samples():
            yield record

    def samples(self) -> Iterator[tuple[int, TokenRecord]]:
        """The one decoding loop: stream (sample index, record) pairs, a step of all live samples at a time.

        Finished samples (end of text, stop sequence) stop costing work: their rows are dropped from the
        batch and from the cache, so the remaining samples step as a smaller batch.
        """
        if self.backend.streams_tokens:  # a serving engine decodes: its tokens become the records
            if self.num_samples > 1:
                raise BatchUnsupported(self.backend.info)
            for record in self._engine_records():
                yield 0, record
            return
        settings, results, k, codec = self.settings, self.results, self.settings.top_alternatives, self.codec
        processors = build_logits_processors(settings)
        rngs = [torch.Generator().manual_seed(r.settings.seed) for r in results]

        prompt_ids = self._prompt_ids()
        count = self.num_samples
        # All positions of every sample in one preallocated block; processors see input_ids[:, :n].
        sequence = torch.empty((count, len(prompt_ids) + settings.max_new_tokens), dtype=torch.long)  # (N, T + new)
        written = sequence.numpy()  # the same memory: a numpy store per step instead of a torch.tensor
        sequence[:, : len(prompt_ids)] = torch.tensor(prompt_ids)
        n = len(prompt_ids)

        started = time.perf_counter()
        logits, cache = self.backend.prefill(prompt_ids, top_k=k)  # (T, V): the prompt runs once for all samples
        k_eff = min(k, logits.shape[-1])
        given = self._given_statistics(cache, k_eff)  # (1, T, k), (1, T, k), (1, T), (1, T), or None

        # Prompt token i is scored by the distribution at position i - 1: the same statistics as a decoding step,
        # PROMPT_CHUNK rows at a time (a (T, V) work buffer for a long prompt would double the logits' memory).
        scratch = np.empty((max(count, min(PROMPT_CHUNK, n)), logits.shape[-1]), dtype=np.float32)  # work buffer (rows, V)
        prompt_records = [
            TokenRecord(position=0, token_id=prompt_ids[0], text=codec.label(prompt_ids[0]), is_prompt=True,
                        raw_prob=None, prob=None, rank=None, entropy_bits=None, bytes=codec.piece(prompt_ids[0]))
        ]
        for start in range(0, n - 1, PROMPT_CHUNK):
            rows = logits[start: min(start + PROMPT_CHUNK, n - 1)]  # (chunk, V): the distributions at positions start..
            stats = StepStats.of(rows, k_eff, scratch, given and tuple(a[0, start: start + rows.shape[0]] for a in given))
            for r in range(rows.shape[0]):
                i = start + r + 1  # the prompt token this row scores
                token_id, previous_id = prompt_ids[i], prompt_ids[i - 1]
                raw_prob = stats.prob(r, token_id)
                prompt_records.append(TokenRecord(
                    position=i, token_id=token_id, text=codec.label(token_id, previous_id), is_prompt=True, raw_prob=raw_prob,
                    prob=raw_prob, rank=stats.rank(r, token_id), entropy_bits=stats.entropy_bits[r],
                    top=stats.top(r, codec, previous_id), bytes=codec.piece(token_id, previous_id),
                ))
        threads = None if self.backend.computes_with_torch else 1
        # A step runs torch ops only to penalise, warp or sample; a greedy step on the raw distribution is numpy alone.
        # torch.set_num_threads is not free (it resizes torch's thread pool, whose threads then spin): measured with a
        # PyTorch model loaded beside an ONNX one, toggling it every step cost the ONNX decode ~10%.
        step_threads = threads if processors or settings.do_sample else None
        for result in results:
            result.prompt_tokens = list(prompt_records)
            if result is not self.result:
                result.notices = list(self.result.notices)
                result.dropped_prompt_tokens = self.result.dropped_prompt_tokens
        if count > 1:
            cache = self.backend.expand(cache, count)  # the prompt's cache, one copy per sample
        next_logits = logits[-1:].expand(count, -1)  # (N, V), a view: every sample starts from the same distribution
        next_given = given and tuple(np.broadcast_to(a[0, -1], (count, *a.shape[2:])) for a in given)

        live = list(range(count))  # row r of the batch is sample live[r]
        previous_ids = [prompt_ids[-1]] * count  # by row
        decode_started = None
        paused_s = 0.0  # time spent suspended at `yield` (the consumer's work) is not the model's
        stopped = False
        for step in range(settings.max_new_tokens):
            if self.stop_event.is_set():
                stopped = True
                break
            with torch_threads(step_threads):
                tokens, probs, stats = self._choose(next_logits, next_given, processors, sequence, n, rngs, live, k_eff,
                                                    scratch)
                records = []
                for r, token_id in enumerate(tokens):
                    previous_id = previous_ids[r]
                    raw_prob = stats.prob(r, token_id)
                    records.append(TokenRecord(
                        position=n, token_id=token_id, text=codec.label(token_id, previous_id), is_prompt=False,
                        raw_prob=raw_prob, prob=raw_prob if probs is None else probs[r], rank=stats.rank(r, token_id),
                        entropy_bits=stats.entropy_bits[r], top=stats.top(r, codec, previous_id),
                        bytes=codec.piece(token_id, previous_id),
                    ))
            written[:, n] = tokens
            n += 1
            previous_ids = tokens
            now = time.perf_counter()
            if decode_started is None:
                decode_started = now
            finished = []  # rows whose sample ended at this token
            for r, (sample, record) in enumerate(zip(live, records)):
                result = results[sample]
                self._outputs[sample] += record.bytes
                result.tokens.append(record)
                if result.ttft_ms is None:
                    result.ttft_ms = (now - started) * 1000
                else:
                    result.decode_ms = (now - decode_started - paused_s) * 1000
                if record.token_id in codec.eos_ids and not self.ignore_eos:
                    result.finish_reason = "eos"
                elif self._hit_stop_sequence(sample, record.bytes):
                    result.finish_reason = "stop_sequence"
                else:
                    continue
                finished.append(r)
            for r, sample in enumerate(live):
                if r in finished:
                    self._finish_text(sample)  # final before its last record is seen: a consumer may stop here
                yielded = time.perf_counter()
                yield sample, records[r]
                paused_s += time.perf_counter() - yielded

            if finished:
                keep = [r for r in range(len(live)) if r not in finished]
                live = [live[r] for r in keep]
                if not live:
                    break
                # Drop the finished rows everywhere, so they cost nothing from here on.
                cache = self.backend.select(cache, keep)
                sequence = sequence[keep]
                written = sequence.numpy()
                tokens = [tokens[r] for r in keep]
                previous_ids = tokens
            if step + 1 < settings.max_new_tokens:
                next_logits, cache = self.backend.step_batch(tokens, cache)  # (N_live, V)
                next_given = self._given_statistics(cache, k_eff)
                next_given = next_given and tuple(a[:, -1] for a in next_given)  # (N_live, k), ..., (N_live,)

        for sample in live:  # the samples still running when the loop ended: by length, or by Stop
            results[sample].finish_reason = "stopped" if stopped else "length"
            self._finish_text(sample)

    def _engine_records(self) -> Iterator[TokenRecord]:
        """The run when a serving engine decodes (`backend.streams_tokens`): the engine's tokens become the same
        records, bytes included, with the engine's probabilities and as many alternatives as it gave. What it does
        not report stays None, never estimated: the probability in the sampled (warped) distribution, the entropy,
        a rank outside its alternatives, and the prompt's scores when it does not echo them."""
        settings, result, codec = self.settings, self.result, self.codec
        prompt_ids = self._prompt_ids()
        result.prompt_tokens = [
            TokenRecord(position=i, token_id=t, text=codec.label(t, prompt_ids[i - 1] if i else None), is_prompt=True,
                        raw_prob=None, prob=None, rank=None, entropy_bits=None,
                        bytes=codec.piece(t, prompt_ids[i - 1] if i else None))
            for i, t in enumerate(prompt_ids)
        ]
        result.notices.append(Notice(
            "Decoded by a serving engine: tokens, their probabilities and the alternatives come from it. Attention, "
            "entropy, the sampled (warped) distribution and ranks beyond the alternatives are not available.",
            key="remote.notice"))
        started = time.perf_counter()
        finish, decode_started, paused_s, fewer_noted = "length", None, 0.0, False
        n, previous_id, echoed = len(prompt_ids), prompt_ids[-1], 0
        tokens = self.backend.stream_tokens(prompt_ids, settings, self.stop_event)
        try:
            for token in tokens:
                # OpenAI's convention adds the chosen token to the top-N when it is not among them: keep the top-N.
                token.top = token.top[:settings.top_alternatives]
                if token.is_prompt:  # the engine's echo: its scores for the prompt tokens
                    record = result.prompt_tokens[echoed] if echoed < n else None
                    if record is not None and record.token_id == token.token_id and token.logprob is not None:
                        before = prompt_ids[echoed - 1] if echoed else None
                        record.raw_prob = record.prob = math.exp(token.logprob)
                        record.top = [Alternative(i, codec.label(i, before), math.exp(lp), codec.piece(i, before)) for i, lp in token.top]
                        record.rank = next((r + 1 for r, (i, _) in enumerate(token.top) if i == token.token_id), None)
                    echoed += 1
                    continue
                if self.stop_event.is_set():
                    finish = "stopped"
                    break
                if len(result.tokens) >= settings.max_new_tokens:
                    continue  # more than asked for: ignored (reading on lets the engine finish its run normally)
                if len(token.top) < settings.top_alternatives and not fewer_noted:
                    fewer_noted = True
                    result.notices.append(Notice(
                        f"The engine gave {len(token.top)} alternatives per token where {settings.top_alternatives} were "
                        "asked; the view shows those it gave.", key="remote.fewer_alternatives", given=len(token.top),
                        asked=settings.top_alternatives))
                piece = codec.piece(token.token_id, previous_id)
                record = TokenRecord(
                    position=n, token_id=token.token_id, text=codec.label(token.token_id, previous_id), is_prompt=False,
                    raw_prob=None if token.logprob is None else math.exp(token.logprob), prob=None,
                    rank=next((r + 1 for r, (i, _) in enumerate(token.top) if i == token.token_id), None), entropy_bits=None,
                    top=[Alternative(i, codec.label(i, previous_id), math.exp(lp), codec.piece(i, previous_id)) for i, lp in token.top],
                    bytes=piece,
                )
                n += 1
                previous_id = token.token_id
                self._outputs[0] += piece
                result.tokens.append(record)
                now = time.perf_counter()
                if decode_started is None:
                    result.ttft_ms = (now - started) * 1000
                    decode_started = now
                else:
                    result.decode_ms = (now - decode_started - paused_s) * 1000
                yield record
                paused_s += time.perf_counter() - now
                if token.token_id in codec.eos_ids and not self.ignore_eos:
                    finish = "eos"
                    break
                if self._hit_stop_sequence(0, piece):
                    finish = "stop_sequence"
                    break
            else:
                if len(result.tokens) < settings.max_new_tokens:
                    finish = "stopped" if self.stop_event.is_set() else "eos"  # the engine ended the text itself
        finally:
            tokens.close()
        result.finish_reason = finish
        self._finish_text(0)


@contextmanager
def torch_threads(count: int | None):
    """Run a block with `count` torch intra-op threads (None: leave as is), restoring the previous count."""
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def generate(backend: Backend, source: ModelSource, prompt: str, settings: GenerationSettings, **kwargs) -> GenerationResult:
    """Run a generation to the end and return its result."""
    run = Generation(backend, source, prompt, settings, **kwargs)
    for _ in run:
        pass
    return run.result


def generate_samples(backend: Backend, source: ModelSource, prompt: str, settings: GenerationSettings, num_samples: int,
                     **kwargs) -> list[GenerationResult]:
    """Run N samples of one prompt as one batch to the end; sample i used seed + i (see `Generation`)."""
    run = Generation(backend, source, prompt, settings, num_samples=num_samples, **kwargs)
    for _ in run.samples():
        pass
    return run.results
