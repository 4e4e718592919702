"""Continuous batching: every run on a local backend decodes in one batch, which runs join and leave between steps.

vLLM does this for a server's users; here it is what lets a class share one link. The prompts of the runs that arrive
before a step are prefilled together (`Backend.prefill_batch`), their rows (one per sample) join the batch at that
step and choose their first tokens at once; then every row of every run steps as one batch, each run with its own
settings, seeds, processors and stream. A
row leaves when its sample finishes (end of text, stop sequence, max_new_tokens); a run leaves at Stop or when its
consumer goes away (a closed stream, a disconnected client), and its rows stop costing work.

There is no scheduler thread: a consumer that waits for its next record and finds nobody stepping takes a step for
everyone (records go to each run's queue), and otherwise waits for the step in progress. A run alone therefore
decodes in its consumer's thread with no hand-over at all, as a plain loop would. A step ends as soon as every row has
chosen its token, and the forward pass that feeds those tokens opens the next step: a record reaches its consumer
without waiting for the pass that follows it (the first token comes right after the prompt's pass).

A row computes what it would alone: the backends pad shorter rows on the left, mask the padding and count each
row's positions from its own first token (`Backend.join`), and each run samples with its own generators.
"""

from __future__ import annotations

import itertools
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

from .machine import batch_rows, torch_threads

if TYPE_CHECKING:
    from .backends.base import Backend
    from .generation import Generation
    from .records import TokenRecord

_arrivals = itertools.count()


class Member:
    """One run's part of the batch: its rows (one per sample still running), the decoding state of those rows, and
    the queue of records its consumer has not read yet."""

    def __init__(self, run: Generation, prompt_ids: list[int]):
        self.run, self.prompt_ids, self.arrival = run, prompt_ids, next(_arrivals)
        self.processors = run.processors  # transformers' logits processors for the run's settings
        self.k = run.settings.top_alternatives
        self.queue: deque = deque()  # (sample, record) pairs for the consumer
        self.done = False  # no record will be added to `queue` any more
        self.error: BaseException | None = None
        self.closed = False  # the consumer went away
        self.live: list[int] = []  # the sample of each of its rows, in batch order
        self.logits = self.given = None  # the distributions its rows choose their next token from: (rows, V), ...
        self.chosen: list[int] = []  # the tokens its rows chose last, which the next step feeds
        self.step = 0  # tokens generated per row so far
        self.started = time.perf_counter()
        self.first_token_at: float | None = None
        self.idle_at_first = 0.0  # the batch's idle time when its first token came (see DecodeBatch._idle_s)
        self.hidden = None  # contrastive search: the hidden states (rows, E) after the candidates its rows were fed
        self.unscored: tuple[PromptScores, int, int] | None = None  # its prompt's positions still to score: (scores, row, pad)

    def start(self, logits: torch.Tensor, given: tuple | None) -> None:
        """Set up its rows from the prompt's distributions: one row per sample, each with its own generator, and
        every position of every row in one preallocated block that the processors read (sequence[:, :n + step])."""
        run, n = self.run, len(self.prompt_ids)
        count = run.rows  # one per sample, or one per beam or contrastive candidate (then `live` holds rows, not samples)
        self.live = list(range(count))
        per_sample = run.beam is None and run.contrastive is None
        self.rngs = [torch.Generator().manual_seed(r.settings.seed) for r in run.results] if per_sample else [None] * count
        self.sequence = torch.empty((count, n + run.settings.max_new_tokens), dtype=torch.long)  # (N, T + new)
        self.written = self.sequence.numpy()  # the same memory: a numpy store per step instead of a torch.tensor
        self.sequence[:, :n] = torch.tensor(self.prompt_ids)
        self.previous_ids = [self.prompt_ids[-1]] * count
        self.logits = logits[-1:].expand(count, -1)  # (N, V), a view: every sample starts from the same distribution
        self.given = given and tuple(np.broadcast_to(a[0, -1], (count, *a.shape[2:])) for a in given)

    def keep(self, rows: list[int]) -> None:
        """Keep only its rows `rows` (indices among its own), in that order (beams: a row may be kept twice, or moved)."""
        if rows == list(range(len(self.live))):  # a beam step whose beams all stay in their rows
            return
        self.live = [self.live[r] for r in rows]
        self.written, self.rngs = self.written[rows], [self.rngs[r] for r in rows]  # numpy's copy: cheaper than torch's
        self.sequence = torch.from_numpy(self.written)  # the same memory
        self.previous_ids = [self.previous_ids[r] for r in rows]


class PromptScores:
    """The positions before the last of prompts prefilled together (`Backend.prefill_first`), scored once for all of
    them after their first tokens have gone out (`Backend.score_rest`)."""

    def __init__(self, backend: Backend, rest):
        self.backend, self.rest, self.scored = backend, rest, None

    def get(self) -> tuple:
        if self.scored is None:
            self.scored, self.rest = self.backend.score_rest(self.rest), None  # logits (N, T - 1, V), statistics or None
        return self.scored


class DecodeBatch:
    """All the runs decoding on one backend, stepped together. `stream(run, prompt_ids)` is a run's way in."""

    def __init__(self, backend: Backend, max_rows: int | None = None):
        self.backend = backend
        self.max_rows = max_rows or batch_rows()  # rows stepped together; a run that does not fit waits its turn
        self._cond = threading.Condition()
        self._stepping = False  # a consumer is taking a step (only one at a time)
        self._stepper: int | None = None  # its thread
        self._waiting: list[Member] = []  # runs that have not joined yet
        self._members: list[Member] = []  # runs in the batch, their rows contiguous, in this order
        self._cache = None  # the backend's cache of all rows
        self._served: dict[str, int] = {}  # owner -> when a run of theirs last joined (round-robin between users)
        self._turn = 0
        self._scratch: np.ndarray | None = None  # the statistics' work buffer (rows, V), reused by every step
        self._idle_s = 0.0  # time with rows in the batch and nobody stepping (their consumers were busy)
        self._idle_since: float | None = None

    # --- a run's side -----------------------------------------------------------------------------------------

    def stream(self, run: Generation, prompt_ids: list[int]) -> Iterator[tuple[int, TokenRecord]]:
        """The run's (sample, record) pairs as the batch makes them; closing the iterator takes the run out."""
        member = Member(run, prompt_ids)
        with self._cond:
            self._waiting.append(member)
        try:
            while (item := self._next(member)) is not None:
                yield item
        finally:
            member.closed = True
            self._retire(member)

    def _next(self, member: Member) -> tuple[int, TokenRecord] | None:
        """The member's next record, stepping the batch while none is there; None when the run is over."""
        with self._cond:
            while not member.queue and not member.done:
                if self._stepping:
                    self._cond.wait()
                    continue
                self._as_stepper(self._step)
            if member.queue:
                return member.queue.popleft()
            if member.error is not None:
                raise member.error
            return None

    def _as_stepper(self, work, steps: bool = True) -> None:
        """Run `work` on the batch as its one stepper: called with the lock held and nobody stepping; the lock is
        released meanwhile (consumers read their queues) and held again after, the waiting consumers woken. After a
        step (`steps`), the batch is idle until the next one."""
        self._stepping, self._stepper = True, threading.get_ident()
        self._cond.release()
        try:
            work()
        finally:
            self._cond.acquire()
            self._stepping, self._stepper = False, None
            if steps:
                self._idle_since = time.perf_counter()
            self._cond.notify_all()

    def _retire(self, member: Member) -> None:
        """Wait until a member whose consumer went away is out of the batch, taking it out if nobody is stepping:
        after this its results change no more (the consumer saves them), and its rows cost nothing."""
        with self._cond:
            if self._stepping and self._stepper == threading.get_ident():
                return  # a stream dropped unclosed, finalized by the garbage collector during a step: the next step retires it
            while not member.done:
                if member in self._waiting:  # gone before it joined: nothing was made
                    self._waiting.remove(member)
                    member.live = list(range(member.run.rows))
                    self._finish(member, "stopped")
                    break
                if self._stepping:
                    self._cond.wait()
                    continue
                self._as_stepper(lambda: self._leave([m for m in self._members if m.closed]), steps=False)

    # --- the stepping consumer's side ---------------------------------------------------------------------------

    def _step(self) -> None:
        """One step of the whole batch: runs that went away leave, the rows are fed the tokens they chose last (the next
        distributions), waiting runs join (prefill, first distributions), and every row chooses its next token (records
        to the queues; finished rows leave). The step ends there, so its records reach their consumers before the
        forward pass of the next step."""
        now = time.perf_counter()
        if self._idle_since is not None and self._members:
            self._idle_s += now - self._idle_since
        try:
            if any(m.closed for m in self._members):
                self._leave([m for m in self._members if m.closed])
            self._score_prompts([m for m in self._members if m.unscored])
            self._feed()
            if self._waiting:  # read without the lock: a run that arrives meanwhile joins at the next step
                self._join(self._admitted())
            self._choose()
        except Exception as exc:  # the batch's forward failed: every run in it ends with that error
            for member in self._members:
                member.error = exc
                self._finish(member, None)
            self._members, self._cache = [], None

    def _admitted(self) -> list[Member]:
        """Waiting runs that join now: round-robin between users (whoever was served longest ago first, then the order
        of arrival), as long as their rows fit; a batch with no rows takes any run (a run has at most 16 rows)."""
        with self._cond:
            waiting = sorted(self._waiting, key=lambda m: (self._served.get(m.run.owner, -1), m.arrival))
            used, admitted = sum(len(m.live) for m in self._members), []
            for member in waiting:
                if used and used + member.run.rows > self.max_rows:
                    break
                used += member.run.rows
                admitted.append(member)
                self._turn += 1
                self._served[member.run.owner] = self._turn
                self._waiting.remove(member)
            return admitted

    def _join(self, members: list[Member]) -> None:
        """Prefill the joining runs' prompts and append their rows to the batch. Prompts of similar length are
        prefilled together (the weights read once for all of them), at most PREFILL_POSITIONS padded positions at a
        time, so that their logits stay the size of one long prompt's.

        The first token first: only the prompts' last positions are scored now (`prefill_first`), which is all their
        first tokens need; their prompt records are taken unscored (token, text, position) and scored at the start of
        the next step (`_score_prompts`), or when the run ends, whichever comes first. A run that needs its prompt's
        scores before its first token (`Generation.prompt_first`: a /v1 stream that echoes the prompt with logprobs)
        is prefilled whole (`prefill_batch`)."""
        for group in prefill_groups(members):
            prompts, top_k = [m.prompt_ids for m in group], max(m.k for m in group)
            width, first = max(len(ids) for ids in prompts), not group[0].run.prompt_first
            try:
                if first:
                    logits, given, cache, rest = self.backend.prefill_first(prompts, top_k=top_k)  # (N, 1, V), ...
                else:
                    logits, cache = self.backend.prefill_batch(prompts, top_k=top_k)  # (N, T, V)
                    given = self.backend.statistics(cache)  # (N, T, k_max), ..., or None
            except Exception as exc:  # these prompts failed (the other runs go on)
                for member in group:
                    member.error = exc
                    self._finish(member, None)
                continue
            scores = PromptScores(self.backend, rest) if first and width > 1 else None  # (a prompt of one token has no score)
            rows, joined = [], []
            for i, member in enumerate(group):
                run, pad = member.run, width - len(member.prompt_ids)
                skip = 0 if first else pad  # first: the last position alone, (N, 1, V)
                own = logits[i, skip:]  # (T_i, V), or (1, V) first, a view
                try:
                    member.k = min(member.k, own.shape[-1])
                    own_given = run.given_statistics(given and tuple(a[i: i + 1, skip:] for a in given), member.k)
                    if scores is None:
                        prompt_records = run.prompt_records(member.prompt_ids, own, own_given, member.k, self._scratch_for(own))
                    else:
                        prompt_records, member.unscored = run.unscored_prompt(member.prompt_ids), (scores, i, pad)
                except Exception as exc:
                    member.error = exc
                    self._finish(member, None)
                    continue
                for result in run.results:
                    result.prompt_tokens = list(prompt_records)
                if run.contrastive is not None:  # the context's hidden states start with the prompt's
                    run.contrastive.start(self.backend.last_hidden(cache)[i, pad:])  # (T_i, E)
                member.start(own, own_given)
                rows += [i] * len(member.live)
                joined.append(member)
            if joined:
                self._cache = self.backend.join(self._cache, cache, rows)
                self._members += joined

    def _score_prompts(self, members: list[Member]) -> None:
        """Score the prompt positions left by `prefill_first` (see `_join`): each group's once, then each run's records."""
        for member in members:
            (scores, i, pad), member.unscored = member.unscored, None
            run = member.run
            logits, given = scores.get()  # (N, T - 1, V), ...
            own = logits[i, pad:]  # (T_i - 1, V): the distributions at its positions before the last
            own_given = run.given_statistics(given and tuple(a[i: i + 1, pad:] for a in given), member.k)
            records = run.prompt_records(member.prompt_ids, own, own_given, member.k, self._scratch_for(own))
            for result in run.results:
                result.prompt_tokens = list(records)

    def _scratch_for(self, logits: torch.Tensor, rows: int = 64) -> np.ndarray:
        rows = max(rows, sum(len(m.live) for m in self._members) + 16)
        if self._scratch is None or self._scratch.shape[0] < rows or self._scratch.shape[1] != logits.shape[-1]:
            self._scratch = np.empty((rows, logits.shape[-1]), dtype=np.float32)  # (rows, V)
        return self._scratch

    def _choose(self) -> None:
        """Every row picks its next token; records go to the runs' queues, and the tokens of the rows that go on to each
        run's `chosen`, for the next step to feed (finished rows and stopped runs are taken out of the batch here)."""
        members = self._members
        scratch = self._scratch_for(members[0].logits) if members else None
        # A step runs torch ops only to penalise, warp or sample; beside a backend that is not torch they run on one
        # thread, so that torch's OpenMP workers do not spin on the cores the backend needs (see Backend).
        threads = None if self.backend.computes_with_torch else 1
        if not any(m.processors or m.run.settings.do_sample or m.run.beam or m.run.contrastive for m in members):
            threads = None
        now, starts, row = time.perf_counter(), [], 0
        for member in members:
            starts.append(row)
            row += len(member.live)
        with torch_threads(threads):
            # Drawing a sample is the largest part of a run's choice (sampling.draw: ~0.3 ms per row for GPT-2 after
            # top-k; a 16-row step's choices take 16 ms beside a 29 ms forward pass, ONNX int8, 2 cores). Worker
            # threads, one per core, did not shorten them (the backend's threads still hold the cores after its run).
            outcomes = [self._choose_for(member, scratch[start: start + len(member.live)], now)
                        for member, start in zip(members, starts)]
        keep = []
        for member, start, (going, chosen) in zip(members, starts, outcomes):
            keep += [start + r for r in going]  # beams: the parent row of each next beam (repeated, reordered)
            member.chosen = chosen  # the token of each row that goes on, in their (kept) order
        if keep != list(range(row)):
            self._members = [m for m in members if not m.done]
            self._cache = self._select(keep)

    def _choose_for(self, member: Member, scratch: np.ndarray, now: float) -> tuple[list[int], list[int]]:
        """One run's rows pick their tokens (`scratch`: the statistics' work rows, its own). Returns (its rows that go
        on, the token each of them feeds next)."""
        run, rows = member.run, len(member.live)
        if run.stop_event.is_set():  # Stop is looked at between two steps
            self._finish(member, "stopped")
            return [], []
        n = len(member.prompt_ids)
        if member.first_token_at is None:
            member.first_token_at, member.idle_at_first = now, self._idle_s
        if run.beam is not None:
            return self._beam_step(member, scratch, now)
        if run.contrastive is not None:
            return self._contrastive_step(member, scratch, now)
        chosen, probs, stats = run.choose(member.logits, member.given, member.processors,
                                          member.sequence[:, :n + member.step], member.rngs, member.k, scratch)
        member.written[:, n + member.step] = chosen
        member.step += 1
        decode_ms = (now - member.first_token_at - (self._idle_s - member.idle_at_first)) * 1000
        going = []
        for r, token_id in enumerate(chosen):
            sample = member.live[r]
            record = stats.record(r, n + member.step - 1, token_id, member.previous_ids[r], run.codec,
                                  prob=None if probs is None else probs[r])
            if not run.take(sample, record, (now - member.started) * 1000, decode_ms):
                going.append(r)
            member.queue.append((sample, record))
        member.previous_ids = chosen
        if len(going) < rows:
            member.keep(going)
        if not member.live:
            self._finish(member, None)
        return going, [chosen[r] for r in going]

    def _contrastive_step(self, member: Member, scratch: np.ndarray, now: float) -> tuple[list[int], list[int]]:
        """A contrastive search run's step (decoding/contrastive.py): the candidate its k rows were fed that scores best
        is taken (from the second step on), and its row, copied to all k, is fed the next k candidates."""
        run, n = member.run, len(member.prompt_ids)
        chosen, row, tokens = run.choose_contrastive(member.logits, member.given, member.processors,
                                                     member.sequence[:, :n + member.step], member.hidden, member.k, scratch,
                                                     n + member.step, member.previous_ids[0])
        if chosen is not None:
            decode_ms = (now - member.first_token_at - (self._idle_s - member.idle_at_first)) * 1000
            finished = run.take(0, chosen, (now - member.started) * 1000, decode_ms)
            member.queue.append((0, chosen))
            member.written[:, n + member.step] = chosen.token_id
            member.step += 1
            if finished:
                self._finish(member, None)
                return [], []
            member.previous_ids = [chosen.token_id] * len(member.live)
        rows = [row] * len(member.live)
        member.keep(rows)
        return rows, tokens

    def _beam_step(self, member: Member, scratch: np.ndarray, now: float) -> tuple[list[int], list[int]]:
        """A beam search run's step (decoding/beam.py): its B rows' continuations are scored and the next beams chosen;
        its rows are then the next beams, each its parent's row (which the batch's cache select copies) with the new
        token. Its records go out when the search ends (`_finish`): until then no beam is known to be returned."""
        run, n = member.run, len(member.prompt_ids)
        parents, tokens = run.choose_beams(member.logits, member.given, member.processors, member.sequence[:, :n + member.step],
                                           member.k, scratch, n + member.step, member.previous_ids)
        member.step += 1
        if run.beam.done or member.step >= run.settings.max_new_tokens:
            self._finish(member, None)
            return [], []
        member.keep(parents)  # the next beams' histories: their parents', then their tokens
        member.written[:, n + member.step - 1] = tokens
        member.previous_ids = tokens
        return parents, tokens

    def _feed(self) -> None:
        """Feed every row the token it chose last: the next distributions, split between the runs (views, no copy)."""
        tokens = [token for member in self._members for token in member.chosen]
        if not tokens:
            return
        logits, self._cache = self.backend.step_batch(tokens, self._cache)  # (N, V)
        given = self.backend.statistics(self._cache)  # (N, 1, k_max), ..., or None
        if any(m.run.contrastive for m in self._members):  # the candidates' hidden states, (N, 1, E)
            hidden, row = self.backend.last_hidden(self._cache), 0
            for member in self._members:
                member.hidden = hidden[row: row + len(member.live), -1].copy() if member.run.contrastive else None  # (k, E)
                row += len(member.live)
        if len(self._members) == 1:  # alone: all the rows are its own
            member = self._members[0]
            member.logits, member.given = logits, member.run.given_statistics(given and tuple(a[:, -1] for a in given), member.k)
            return
        row = 0
        for member in self._members:
            rows = len(member.live)
            member.logits = logits[row: row + rows]
            member.given = member.run.given_statistics(given and tuple(a[row: row + rows, -1] for a in given), member.k)
            row += rows

    def _leave(self, members: list[Member]) -> None:
        """Take `members` (runs stopped or gone) out of the batch, with the tokens they have."""
        if not members:
            return
        keep, row = [], 0
        for member in self._members:
            rows = len(member.live)
            if member not in members:
                keep += range(row, row + rows)
            row += rows
        for member in members:
            self._finish(member, "stopped")
        self._members = [m for m in self._members if m not in members]
        self._cache = self._select(keep)

    def _select(self, keep: list[int]):
        """The batch's cache with only rows `keep`; None (its memory given back to the backend) when none is left."""
        if keep:
            return self.backend.select(self._cache, keep)
        self.backend.release(self._cache)
        return None

    def _finish(self, member: Member, reason: str | None) -> None:
        """The run is over: its rows still running end with `reason` (None: they all finished already, or it failed).
        A prompt not scored yet is scored first: a run's results are complete when it ends."""
        if member.unscored is not None:
            try:
                self._score_prompts([member])
            except Exception as exc:  # the backend failed: the run ends with that error, its records unscored
                member.error = member.error or exc
        run = member.run
        if run.beam is not None and member.error is None:  # the best beams become its samples, their records go out now
            now = time.perf_counter()
            first = member.first_token_at or now
            decode_ms = (now - first - (self._idle_s - member.idle_at_first)) * 1000
            member.queue.extend(run.finish_beams((first - member.started) * 1000, decode_ms))
            member.live, member.done = [], True
            return
        if run.beam is not None:
            member.live = list(range(run.num_samples))
        if run.contrastive is not None:  # its rows are candidates; its one sample ends here unless it has ended
            member.live = [0] if run.result.finish_reason == "running" else []
        for sample in member.live:
            member.run.end(sample, reason or "stopped")
        member.live = []
        member.done = True


PREFILL_POSITIONS = 1024  # padded prompt positions prefilled at once: logits of 1024 x 50,257 floats, one GPT-2 context


def prefill_groups(members: list[Member]) -> list[list[Member]]:
    """The joining runs in groups prefilled together: by prompt length (little padding), each group's rows x longest
    prompt at most PREFILL_POSITIONS (a prompt longer than that alone); runs that score their prompt first apart."""
    groups: list[list[Member]] = []
    for member in sorted(members, key=lambda m: (m.run.prompt_first, len(m.prompt_ids))):
        group = groups[-1] if groups else None
        if group and group[0].run.prompt_first == member.run.prompt_first \
                and (len(group) + 1) * len(member.prompt_ids) <= PREFILL_POSITIONS:
            group.append(member)
        else:
            groups.append([member])
    return groups


_batches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_batches_lock = threading.Lock()


def batch_for(backend: Backend) -> DecodeBatch:
    """The one batch of a backend (created on first use): every run on it decodes there."""
    with _batches_lock:
        batch = _batches.get(backend)
        if batch is None:
            batch = _batches[backend] = DecodeBatch(backend)
        return batch
