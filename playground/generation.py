"""A run: prompt -> backend -> transformers' logits processors -> token records with probabilities (or a serving
engine's records), into the run's results. The loop that steps it, with every other run on its backend, is
batching.py's; what each step does for a run (choose its tokens, take them into its results) is here."""

from __future__ import annotations

import math
import threading
from array import array
import time
import uuid
from contextlib import closing
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np
import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from .backends.base import Backend, Engine
from .batching import batch_for
from .config import MAX_SEED, GenerationSettings, check_prompt
from .decoding.beam import BeamSearch, Node
from .decoding.contrastive import ContrastiveSearch
from .errors import Notice, SettingsError
from .models import ModelSource
from .records import Alternative, GenerationResult, TokenRecord
from .sampling import draw
from .text import TokenCodec, complete_prefix_length, escape_bytes, hex_bytes

LN2 = math.log(2.0)
MAX_SAMPLES = 16  # samples of one prompt drawn at once (num_return_sequences)
PROMPT_CHUNK = 64  # prompt positions whose statistics are computed together


def build_logits_processors(settings: GenerationSettings, eos_ids=frozenset(), prompt_length: int = 0,
                            min_tokens_to_keep: int = 1) -> LogitsProcessorList:
    """transformers' own processors, in the order `generate` applies them; warpers only when sampling (keeping at least
    `min_tokens_to_keep` tokens: beam sampling keeps one more than the end tokens, as `generate` does). The length
    controls need the model's end-of-text ids (`eos_ids`; none: nothing to hold back) and, for `min_new_tokens`, the
    prompt's length (the processors see the prompt and the new tokens: `generate`'s input_ids_seq_length)."""
    keep = {"min_tokens_to_keep": min_tokens_to_keep} if min_tokens_to_keep > 1 else {}
    processors = LogitsProcessorList()
    if settings.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(penalty=settings.repetition_penalty))
    if settings.no_repeat_ngram_size > 0:
        processors.append(NoRepeatNGramLogitsProcessor(settings.no_repeat_ngram_size))
    eos = sorted(eos_ids)
    if settings.min_new_tokens > 0 and eos and not settings.ignore_eos:  # ignore_eos holds it back for the whole run
        processors.append(MinNewTokensLengthLogitsProcessor(prompt_length, settings.min_new_tokens, eos))
    if settings.ignore_eos and eos:
        processors.append(SuppressTokensLogitsProcessor(eos))
    if settings.do_sample:
        if settings.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_k > 0:
            processors.append(TopKLogitsWarper(top_k=settings.top_k, **keep))
        if settings.top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p=settings.top_p, **keep))
        if settings.typical_p < 1.0:
            processors.append(TypicalLogitsWarper(mass=settings.typical_p, **keep))
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
    call costs 40-50 us more right after a step than in a warm loop; docs/onnx.md#loop-overhead).
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
        # The numbers a record keeps are float32 values, as the model computed them (float64 digits beyond that are
        # noise), so that the history packs them in 4 bytes each (token_pack); array('f') rounds a list in one call.
        entropy_bits = array("f", [(l - float(w) / float(zz)) / LN2 for l, w, zz in zip(lse, weighted, z)]).tolist()
        top_probs = [array("f", [math.exp(v - l) for v in row]).tolist() for row, l in zip(top_logits, lse)]
        return cls(x, lse, entropy_bits, top_probs, top_ids)

    def prob(self, row: int, token_id: int) -> float:
        """The model's probability of `token_id` at row `row`, as a float32 value (see `of`)."""
        return array("f", (math.exp(float(self.logits[row, token_id]) - self.lse[row]),))[0]

    def rank(self, row: int, token_id: int) -> int:
        top_ids = self.top_ids[row]
        if token_id in top_ids:
            return top_ids.index(token_id) + 1
        logits = self.logits[row]
        return int(np.count_nonzero(logits > logits[token_id])) + 1

    def top(self, row: int, codec: TokenCodec, previous_id: int | None) -> list[Alternative]:
        return [Alternative(i, codec.label(i, previous_id), p, codec.piece(i, previous_id))
                for i, p in zip(self.top_ids[row], self.top_probs[row])]

    def record(self, row: int, position: int, token_id: int, previous_id: int | None, codec: TokenCodec,
               is_prompt: bool = False, prob: float | None = None, top: list[Alternative] | None = None) -> TokenRecord:
        """The record of `token_id` scored by row `row`; `prob`: its probability in the warped distribution it was
        sampled from (None: nothing warped it, so the raw one); `top`: the row's alternatives, when already made."""
        raw_prob = self.prob(row, token_id)
        return TokenRecord(
            position=position, token_id=token_id, text=codec.label(token_id, previous_id), is_prompt=is_prompt,
            raw_prob=raw_prob, prob=raw_prob if prob is None else prob, rank=self.rank(row, token_id),
            entropy_bits=self.entropy_bits[row], top=self.top(row, codec, previous_id) if top is None else top,
            bytes=codec.piece(token_id, previous_id),
        )


def check_num_samples(value) -> int:
    """How many samples one run may draw at once: a whole number from 1 to MAX_SAMPLES."""
    from .config import as_int

    count = as_int("num_return_sequences", value)
    if not 1 <= count <= MAX_SAMPLES:
        raise SettingsError(key="batch.num_samples", value=count, most=MAX_SAMPLES)
    return count


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample `index` of a batch started with `seed` (the convention every part of the app shares)."""
    return seed + index


class Generation:
    """One run of N samples of one prompt (N = 1 by default). Iterate it to stream TokenRecords (for N > 1,
    iterate `samples()` to get (sample index, record) pairs); `results[i]` holds sample i, complete when
    iteration ends, and `result` is sample 0.

    Sample i samples with its own generator seeded `seed + i`, recorded in `results[i].settings.seed`, so
    it equals a run of one sample with that seed. On a local `Backend` the run joins the backend's batch
    (batching.py): the prompt is run once, its cache copied to N rows, and the rows step together with those of
    every other run on the backend. A serving `Engine` decodes one sequence per request (and batches requests
    itself): it gets N requests, one after another, sample i with seed + i.

    `stop_event` (a threading.Event) ends the run between two steps and keeps what was produced.

    Text is assembled from each token's exact bytes (playground.text), never by decoding a token on
    its own: the streamed text holds back a character until its last byte has arrived, stop
    sequences are matched on bytes (so a match always starts at a character boundary), and a
    character split between the prompt and the output (a branch at its 2nd byte) belongs to the output.
    """

    def __init__(
        self,
        backend: Backend | Engine,
        source: ModelSource,
        prompt: str,
        settings: GenerationSettings,
        stop_event: threading.Event | None = None,
        ignore_eos: bool = False,
        prompt_ids: list[int] | None = None,
        num_samples: int = 1,
        group_id: str | None = None,
        owner: str = "",
        prompt_first: bool = False,
        forced_ids: list[int] | None = None,
    ):
        self.backend = backend
        self.owner = owner  # the login the run is saved under ("" without one: history.LOCAL_OWNER)
        self.source = source
        self.codec: TokenCodec = source.codec
        self.num_samples = check_num_samples(num_samples)
        self.settings = settings.validate().validate_for_context(backend.info.context_length).with_seed()
        if sample_seed(self.settings.seed, self.num_samples - 1) > MAX_SEED:
            raise SettingsError(key="batch.seed_room", field="seed", seed=self.settings.seed, count=self.num_samples,
                                most=MAX_SEED - self.num_samples + 1)
        self.ignore_eos = ignore_eos
        eos_ids = () if ignore_eos else self.codec.eos_ids
        self.beam: BeamSearch | None = None  # beam search's state (decoding/beam.py), for num_beams > 1
        if self.settings.num_beams > 1:
            if isinstance(backend, Engine):
                raise SettingsError(key="beams.remote", field="num_beams", backend=backend.info.backend)
            if self.num_samples > self.settings.num_beams:
                raise SettingsError(key="beams.too_many_returned", field="num_return_sequences", value=self.num_samples,
                                    beams=self.settings.num_beams)
            self.beam = BeamSearch(self.settings.num_beams, self.settings.length_penalty, self.settings.early_stopping,
                                   eos_ids, self.settings.max_new_tokens, self.settings.do_sample,
                                   torch.Generator().manual_seed(self.settings.seed))
        self.contrastive: ContrastiveSearch | None = None  # contrastive search's state (decoding/contrastive.py)
        if self.settings.penalty_alpha > 0:
            if isinstance(backend, Engine) or not backend.gives_hidden:
                raise SettingsError(key="contrastive.no_hidden", field="penalty_alpha",
                                    backend=f"{backend.info.backend} {backend.info.variant}")
            if self.num_samples > 1:
                raise SettingsError(key="contrastive.one_sample", field="num_return_sequences", value=self.num_samples)
            self.contrastive = ContrastiveSearch(self.settings.penalty_alpha, self.settings.top_k)
        # The rows this run has in the batch: one per beam, one per contrastive candidate, or one per sample.
        self.rows = self.settings.num_beams if self.beam else self.settings.top_k if self.contrastive else self.num_samples
        self._min_tokens_to_keep = len(eos_ids) + 1 if self.beam else 1
        # Set again with the prompt's length (the length controls), when it is known.
        self.processors = build_logits_processors(self.settings, self.codec.eos_ids, 0, self._min_tokens_to_keep)
        self.stop_event = stop_event or threading.Event()
        # Score the whole prompt before the first token (a /v1 stream that echoes it with logprobs in its first chunk);
        # otherwise the first token comes first and the prompt's records are scored a step later (batching.py's _join).
        self.prompt_first = prompt_first
        # One step at a time (steps.py): step i takes forced_ids[i], whatever it draws, so that a run made token by token
        # is a run of this loop (its records, its saving); the generators draw as ever, so a step after them samples as
        # the run would have.
        self.forced_ids = list(forced_ids or ())
        self._prompt_length = 0
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
            self.result.notices.append(Notice(key="notice.empty_prompt", token=start))
        if codec.unk_id is not None and codec.unk_id in ids and not self._given_prompt_ids:
            missing = sorted({c for c in self.result.prompt if codec.unk_id in codec.encode(c)[-1:]})
            chars = f"{' '.join(missing[:20])}{' …' if len(missing) > 20 else ''}"
            self.result.notices.append(Notice(
                key="notice.unknown_chars", count=ids.count(codec.unk_id), unk=codec.label(codec.unk_id), chars=chars,
            ))
        room = self.backend.info.context_length - self.settings.max_new_tokens
        if len(ids) > room:
            self.result.dropped_prompt_tokens = len(ids) - room
            self.result.notices.append(Notice(
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
                key="notice.cut_character", bytes=hex_bytes(data[cut:]),
            ))

    def given_statistics(self, given: tuple | None, k: int) -> tuple | None:
        """The backend's own statistics of its latest run (`Backend.statistics`) for k alternatives: the first k of
        the top logits and ids it computed for the run in the batch that asks for the most (largest first)."""
        if given is None or given[0].shape[-1] < k:
            return None
        if given[0].shape[-1] == k:
            return given
        return (given[0][..., :k], given[1][..., :k], *given[2:])

    def choose(self, logits, given, processors, history, rngs, k, scratch) -> tuple[list[int], list[float] | None, StepStats]:
        """Pick each row's next token from `logits` (N, V); returns (token ids, their probabilities in the warped
        distributions or None when nothing warps them, raw stats of all rows; `given`: the backend's, see StepStats).
        The processors see `history` (N, n), each row its own; row r samples with `rngs[r]` (both only looked at
        when something penalises, warps or samples)."""
        stats = StepStats.of(logits, k, scratch, given)
        step = history.shape[1] - self._prompt_length
        forced = self.forced_ids[step] if step < len(self.forced_ids) else None
        if not processors and not self.settings.do_sample:
            if forced is not None:
                return [forced] * len(stats.top_ids), None, stats
            return [row[0] for row in stats.top_ids], None, stats  # greedy on the raw distribution: the top-1 is the argmax
        scores = processors(history, logits.clone())  # (N, V), penalised and warped, each row on its own history
        warped_probs = torch.softmax(scores, dim=-1)  # (N, V)
        if self.settings.do_sample:
            # One draw per row from that row's own generator: row i consumes exactly what a run of one would.
            tokens = [draw(warped_probs[r], rng) for r, rng in enumerate(rngs)]  # torch.multinomial's draw, faster
        else:
            tokens = scores.argmax(-1).tolist()
        if forced is not None:
            tokens = [forced] * len(tokens)  # its probability in the warped distribution is recorded (0: it was cut)
        chosen = torch.tensor(tokens)[:, None]  # (N, 1)
        return tokens, warped_probs.gather(1, chosen)[:, 0].tolist(), stats

    def beam_from_top(self, processors, given) -> bool:
        """Whether a beam step reads only the backend's statistics (`given`, see `choose`): nothing penalises or
        samples, and they hold each row's K most likely tokens (numpy on a few numbers; no torch op, no pass over V).
        Beam sampling draws from all B x V continuations, as transformers does."""
        return not processors and not self.settings.do_sample and given is not None and given[0].shape[-1] >= self.beam.keep

    def choose_beams(self, logits, given, processors, history, k, scratch, position: int,
                     previous_ids: list[int]) -> tuple[list[int], list[int]]:
        """One beam search step of this run's B rows (`logits` (B, V), see `choose`): the beams' continuations get their
        records (position `position`, each scored by its parent row's distribution); returns (the parent row of each
        next beam, its token), as `self.beam.step` does."""
        stats = StepStats.of(logits, k, scratch, given)
        keep = self.beam.keep
        if self.beam_from_top(processors, given):
            # Nothing changes the distributions: the best K continuations are among each row's K most likely tokens,
            # which the graph's statistics hold already (ONNX), so no pass over B x V is needed here.
            top_logits, ids, lse = given[0][:, :keep], given[1][:, :keep], given[2]  # (B, K), (B, K), (B,) float32
            nodes, parents, tokens = self.beam.step(top_logits - lse[:, None], ids)  # (B, K) log p = logit - log-sum-exp
        elif not processors and not self.settings.do_sample and len(stats.top_ids[0]) >= keep:  # the same, from `of`'s
            ids = np.array([row[:keep] for row in stats.top_ids], dtype=np.int64)  # (B, K)
            log_probs = (np.take_along_axis(stats.logits, ids, axis=1) - np.array(stats.lse)[:, None]).astype(np.float32)
            nodes, parents, tokens = self.beam.step(log_probs, ids)  # (B, K) log p = logit - log-sum-exp
        else:
            log_probs = torch.log_softmax(logits.float(), dim=-1)  # (B, V), as transformers' beam search starts
            if processors:
                log_probs = processors(history, log_probs)  # penalties (and warpers, for beam sampling) on the log-probs
            nodes, parents, tokens = self.beam.step(log_probs.numpy())
        tops = {row: stats.top(row, self.codec, previous_ids[row]) for row in {node.row for node in nodes}}  # one per row
        for node in nodes:
            node.record = stats.record(node.row, position, node.token_id, previous_ids[node.row], self.codec,
                                       prob=math.exp(node.logprob) if processors else None, top=tops[node.row])
        return parents, tokens

    def choose_contrastive(self, logits, given, processors, history, hidden, k, scratch, position: int,
                           previous_id: int) -> tuple[TokenRecord | None, int, list[int]]:
        """One contrastive search step of this run's k rows (decoding/contrastive.py): `logits` (k, V) are the
        distributions after the candidates they were fed, `hidden` (k, E) those candidates' hidden states (None at the
        first step, when every row is the prompt's). Returns (the chosen candidate's record, or None at the first step;
        the row to go on from; the next k candidates, from that row's distribution, penalised by the processors)."""
        search = self.contrastive
        stats = StepStats.of(logits, k, scratch, given)
        chosen, row, sequence = None, 0, history[:1]  # (1, n)
        if search.tokens is not None:
            row = search.pick(hidden)
            chosen, previous_id = search.records[row], search.tokens[row]
            sequence = torch.cat([history[row: row + 1], torch.tensor([[previous_id]])], dim=1)  # (1, n + 1)
            position += 1
        scores = logits[row: row + 1].clone()  # (1, V)
        if processors:
            scores = processors(sequence, scores)
        probs, tokens = torch.softmax(scores, dim=-1)[0].topk(search.k)  # (k,) the most likely first
        search.tokens, search.probs = tokens.tolist(), probs.numpy()
        top = stats.top(row, self.codec, previous_id)  # the same alternatives for every candidate
        search.records = [stats.record(row, position, t, previous_id, self.codec, prob=float(p) if processors else None, top=top)
                          for t, p in zip(search.tokens, search.probs)]
        return chosen, row, search.tokens

    def finish_beams(self, since_start_ms: float, decode_ms: float) -> list[tuple[int, TokenRecord]]:
        """The search is over (or stopped): the best beams become the run's samples, each taking the records of its path,
        its sequence score and the beam tree. Returns the (sample, record) pairs, in sample order."""
        returned: list[Node] = self.beam.returned(self.num_samples)
        tree = self.beam.tree(returned)
        pairs = []
        for sample, result in enumerate(self.results):
            result.beam_tree = tree
            if sample >= len(returned):  # stopped before anything was generated
                self.end(sample, "stopped")
                continue
            result.sequence_score = returned[sample].score
            finished = False
            for node in returned[sample].path():
                finished = self.take(sample, node.record, since_start_ms, decode_ms)
                pairs.append((sample, node.record))
            if not finished:
                self.end(sample, "stopped")
        return pairs

    def take(self, sample: int, record: TokenRecord, since_start_ms: float, decode_ms: float) -> bool:
        """Add a generated record to sample `sample`'s result (text, timings); True when that sample is finished:
        end of text, a stop sequence, or max_new_tokens reached."""
        result = self.results[sample]
        self._outputs[sample] += record.bytes
        result.tokens.append(record)
        if result.ttft_ms is None:
            result.ttft_ms = since_start_ms
        else:
            result.decode_ms = decode_ms
        if record.token_id in self.codec.eos_ids and not self.ignore_eos:
            reason = "eos"
        elif self._hit_stop_sequence(sample, record.bytes):
            reason = "stop_sequence"
        elif len(result.tokens) >= self.settings.max_new_tokens:
            reason = "length"
        else:
            return False
        self.end(sample, reason)  # final before its last record is seen: a consumer may stop there
        return True

    def end(self, sample: int, reason: str) -> None:
        """Sample `sample` is over, for `reason` (a finish_reason): its text is final."""
        self.results[sample].finish_reason = reason
        self._finish_text(sample)

    def __iter__(self) -> Iterator[TokenRecord]:
        """Stream the records (of every sample, in step order; with one sample, simply its tokens)."""
        for _, record in self.samples():
            yield record

    def samples(self) -> Iterator[tuple[int, TokenRecord]]:
        """The one decoding loop: stream (sample index, record) pairs, a step of all live samples at a time.

        On a local backend the run joins its backend's batch (batching.py), where the rows of every run on it step
        together, this run's N samples among them: the batch prefills the prompt, then steps, each row choosing its
        token with the run's own processors and generator (`choose`) and taking it into the results (`take`). A
        serving engine decodes one sequence per request and batches requests by itself, so `_engine_samples` runs
        the samples one after another and takes each record the same way.
        """
        prompt_ids = self._prompt_ids()
        self._prompt_length = len(prompt_ids)
        # The length controls count new tokens after the prompt as the loop sees it (after the window kept its tail).
        self.processors = build_logits_processors(self.settings, self.codec.eos_ids, len(prompt_ids), self._min_tokens_to_keep)
        for result in self.results[1:]:  # the prompt's notices (a dropped start, unknown characters) hold for every sample
            result.notices = list(self.result.notices)
            result.dropped_prompt_tokens = self.result.dropped_prompt_tokens
        if isinstance(self.backend, Engine):
            for sample, result in enumerate(self.results):
                yield from self._engine_samples(sample, prompt_ids)
        else:
            yield from batch_for(self.backend).stream(self, prompt_ids)

    def _engine_samples(self, sample: int, prompt_ids: list[int]) -> Iterator[tuple[int, TokenRecord]]:
        """One sample decoded by a serving engine, its records taken into its result as they come; it ends when the
        sample finishes, when the engine ends the text, or at Stop (looked at between two records)."""
        result = self.results[sample]
        started = time.perf_counter()
        decode_started, paused_s = None, 0.0  # time suspended at `yield` (the consumer's work) is not the engine's
        finished = False
        with closing(self._engine_decode(prompt_ids, result)) as records:
            for record in records:
                if self.stop_event.is_set():
                    break
                now = time.perf_counter()
                decode_started = decode_started or now
                finished = self.take(sample, record, (now - started) * 1000, (now - decode_started - paused_s) * 1000)
                yielded = time.perf_counter()
                yield sample, record
                paused_s += time.perf_counter() - yielded
                if finished and result.finish_reason != "length":
                    break  # ends the request; at max_new_tokens the engine's run is read to its end (nothing more is kept)
        if not finished:  # Stop, or an engine that ended the text itself (without sending an end-of-text token)
            self.end(sample, "stopped" if self.stop_event.is_set() else "eos")

    def prompt_records(self, prompt_ids: list[int], logits, given, k: int, scratch: np.ndarray) -> list[TokenRecord]:
        """The prompt's records from its logits (T, V): token i is scored by the distribution at position i - 1, with the
        same statistics as a decoding step, PROMPT_CHUNK rows at a time (a (T, V) work buffer for a long prompt would
        double the logits' memory)."""
        records = self.unscored_prompt(prompt_ids[:1])
        for start in range(0, len(prompt_ids) - 1, PROMPT_CHUNK):
            rows = logits[start: min(start + PROMPT_CHUNK, len(prompt_ids) - 1)]  # (chunk, V): the distributions at positions start..
            stats = StepStats.of(rows, k, scratch, given and tuple(a[0, start: start + rows.shape[0]] for a in given))
            records += [stats.record(r, start + r + 1, prompt_ids[start + r + 1], prompt_ids[start + r], self.codec, is_prompt=True)
                        for r in range(rows.shape[0])]
        return records

    def unscored_prompt(self, prompt_ids: list[int]) -> list[TokenRecord]:
        """Prompt records without probabilities (the first token has no prefix to be scored by; an engine may score none)."""
        codec = self.codec
        return [TokenRecord(position=i, token_id=t, text=codec.label(t, prompt_ids[i - 1] if i else None), is_prompt=True,
                            raw_prob=None, prob=None, rank=None, entropy_bits=None, bytes=codec.piece(t, prompt_ids[i - 1] if i else None))
                for i, t in enumerate(prompt_ids)]

    def _engine_decode(self, prompt_ids: list[int], result: GenerationResult) -> Iterator[TokenRecord]:
        """One sample's records from a serving engine, with what it reports and nothing estimated: the prompt's records
        are taken into the result (scored where the engine echoes them), the new ones yielded. Tokens beyond
        max_new_tokens are read and dropped, so the engine finishes its run normally."""
        settings = result.settings  # this sample's seed
        result.prompt_tokens = self.unscored_prompt(prompt_ids)
        result.notices.append(Notice(key="remote.notice"))
        kept, fewer_noted = 0, False
        with closing(self.backend.stream_records(prompt_ids, settings, self.stop_event)) as records:
            for record in records:
                if record.is_prompt:  # the engine's echo: its scores of the prompt
                    if record.raw_prob is not None and result.prompt_tokens[record.position].token_id == record.token_id:
                        result.prompt_tokens[record.position] = record
                    continue
                if kept == settings.max_new_tokens:
                    continue
                if len(record.top) < settings.top_alternatives and not fewer_noted:
                    fewer_noted = True
                    result.notices.append(Notice(
                        key="remote.fewer_alternatives", given=len(record.top),
                        asked=settings.top_alternatives))
                kept += 1
                yield record


def generate(backend: Backend | Engine, source: ModelSource, prompt: str, settings: GenerationSettings, **kwargs) -> GenerationResult:
    """Run a generation to the end and return its result."""
    run = Generation(backend, source, prompt, settings, **kwargs)
    for _ in run:
        pass
    return run.result


def generate_samples(backend: Backend | Engine, source: ModelSource, prompt: str, settings: GenerationSettings, num_samples: int,
                     **kwargs) -> list[GenerationResult]:
    """Run N samples of one prompt as one batch to the end; sample i used seed + i (see `Generation`)."""
    run = Generation(backend, source, prompt, settings, num_samples=num_samples, **kwargs)
    for _ in run.samples():
        pass
    return run.results
