"""Score a token stream window by window through `Backend.prefill`: its negative log-likelihood, and its KL divergence
to a reference backend (a quantized variant against fp32) on the same windows."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..backends.base import Backend
from .windows import Window

if TYPE_CHECKING:
    import torch

ROWS_PER_CHUNK = 256  # log-probabilities of this many positions at a time: 256 x 50,257 x 4 B = 51 MB for GPT-2


@dataclass(frozen=True)
class Scores:
    """Sums over the scored tokens of a stream (sums, not means, so that streams and windows add up exactly)."""

    nll_nats: float  # sum of -ln p(token | the tokens before it in its window)
    tokens: int  # tokens scored
    seconds: float  # in the backend's forward passes and the scoring, the reference's left out
    kl_nats: float | None = None  # sum over the scored positions of KL(reference || backend), in nats; None without one


@dataclass(frozen=True)
class WindowScores:
    """One window through the backend: the log-probabilities at its scored positions and of the tokens there."""

    rows: slice  # the window's logit rows that predict the scored tokens
    targets: torch.Tensor  # (K,) the scored tokens, ids[first_scored:end]
    log_probs: list  # (k, V) chunks of log_softmax over the vocabulary at those rows, K rows in all
    chosen: torch.Tensor  # (K,) float32: ln p(target) at each scored position

    def greedy(self) -> bool:
        """Whether every scored token is the most likely one at its position (what greedy decoding would choose)."""
        return all(bool((lp.argmax(-1) == t).all()) for lp, t in zip(self.log_probs, self.targets.split(ROWS_PER_CHUNK)))


def score_window(backend: Backend, ids: list[int], window: Window) -> WindowScores:
    """One `prefill` of the window's tokens, whatever the backend (PyTorch, or ONNX of any variant), so that this scores
    exactly what generation computes, and the log-probabilities of its scored tokens."""
    import torch

    logits, _ = backend.prefill(ids[window.begin : window.end])  # (L, V) float32 on the CPU, L = end - begin
    # Position j's logits predict token j + 1: the scored tokens [first_scored, end) are predicted by the rows
    # [first_scored - begin - 1, end - begin - 1) of the window.
    rows = slice(window.first_scored - window.begin - 1, window.end - window.begin - 1)
    targets = torch.tensor(ids[window.first_scored : window.end])  # (K,)
    log_probs = [torch.log_softmax(chunk.float(), dim=-1)  # (k, V) each: ONNX logits are a view of reused buffers
                 for chunk in logits[rows].split(ROWS_PER_CHUNK)]
    chosen = torch.cat([lp.gather(1, t[:, None])[:, 0] for lp, t in zip(log_probs, targets.split(ROWS_PER_CHUNK))])
    return WindowScores(rows, targets, log_probs, chosen)


def score_stream(backend: Backend, ids: list[int], windows: list[Window], reference: Backend | None = None,
                 on_window: Callable[[int], None] | None = None) -> Scores:
    """The negative log-likelihood of `ids` under `backend`, window by window (see windows.sliding_windows).

    Every window is one `prefill` of its tokens (`score_window`). With `reference` (the fp32 model of a quantized
    variant), the same windows also go through it, and at every scored position KL(p_reference || p_backend) = sum_v
    p_ref(v) (ln p_ref(v) - ln p(v)) is added up: how far quantization moves the next-token distribution. `on_window(i)`
    after window i.
    """
    import torch

    nll, kl, tokens, seconds = 0.0, 0.0, 0, 0.0
    for index, window in enumerate(windows):
        started = time.perf_counter()
        scored = score_window(backend, ids, window)
        nll -= scored.chosen.double().sum().item()
        tokens += len(scored.targets)
        seconds += time.perf_counter() - started
        if reference is not None:
            ref_logits, _ = reference.prefill(ids[window.begin : window.end])  # (L, V)
            for lp, ref_chunk in zip(scored.log_probs, ref_logits[scored.rows].split(ROWS_PER_CHUNK)):
                ref_lp = torch.log_softmax(ref_chunk.float(), dim=-1)  # (k, V)
                kl += (ref_lp.exp() * (ref_lp - lp)).sum(-1).double().sum().item()  # sum over k of KL at each position
        if on_window is not None:
            on_window(index)
    return Scores(nll, tokens, seconds, kl if reference is not None else None)
