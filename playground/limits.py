"""Fair limits per user for a class on one link: how many runs one login may have going at once, and how many new
tokens it may ask for per minute. One student's flood is refused with a message that says when to try again, and
everyone else's runs go on. Users without a login (the local user) are not limited.

A run takes its place when it is admitted (`Playground.start`) and gives it back when its stream ends, or, for a run
that is never streamed, when it is dropped (a weakref finalizer), so no place is ever lost.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Callable

from .errors import PlaygroundError

WINDOW_S = 60.0


class LimitReached(PlaygroundError):
    """A user asked for more than their share (a run too many at once, or too many tokens this minute)."""


@dataclass(frozen=True)
class UserLimits:
    """Per-login limits; 0 means no limit."""

    runs: int = 4  # runs going at once (a batch of N samples is one run; a /v1 request of several prompts, one each)
    tokens_per_minute: int = 8192  # new tokens asked for (max_new_tokens x samples) within the last minute


class Admission:
    """Admits runs under UserLimits, per owner; thread-safe."""

    def __init__(self, limits: UserLimits = UserLimits(), clock: Callable[[], float] = time.monotonic):
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._running: dict[str, int] = defaultdict(int)
        self._asked: dict[str, deque[tuple[float, int]]] = defaultdict(deque)  # (when, tokens) within the window
        self._places: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # run -> the finalizer that frees its place

    def admit(self, owner: str, tokens: int, run: object) -> None:
        """Take a place for `run` (of `owner`, asking for `tokens` new tokens), or raise LimitReached. The place is
        given back when `release(run)` is called or `run` is garbage-collected, whichever comes first."""
        if not owner:
            return
        limits = self.limits
        with self._lock:
            now = self._clock()
            asked = self._asked[owner]
            while asked and asked[0][0] <= now - WINDOW_S:
                asked.popleft()
            if limits.runs and self._running[owner] >= limits.runs:
                raise LimitReached(key="limits.runs", limit=limits.runs)
            used = sum(n for _, n in asked)
            if limits.tokens_per_minute and used + tokens > limits.tokens_per_minute:
                # The earliest moment enough of this minute's tokens have aged out for this request to fit.
                freed, wait = used + tokens - limits.tokens_per_minute, WINDOW_S
                for when, n in asked:
                    freed -= n
                    if freed <= 0:
                        wait = when + WINDOW_S - now
                        break
                raise LimitReached(key="limits.tokens", limit=limits.tokens_per_minute, used=used, asked=tokens,
                                   wait=max(1, round(wait)))
            asked.append((now, tokens))
            self._running[owner] += 1
        self._places[run] = weakref.finalize(run, self._free, owner)

    def release(self, run: object) -> None:
        """Give back `run`'s place (once; nothing for a run that took none)."""
        finalizer = self._places.pop(run, None)
        if finalizer is not None:
            finalizer()

    def running(self, owner: str) -> int:
        with self._lock:
            return self._running.get(owner, 0)

    def _free(self, owner: str) -> None:
        with self._lock:
            self._running[owner] = max(0, self._running[owner] - 1)
