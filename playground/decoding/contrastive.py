"""Contrastive search (Su et al. 2022, "A Contrastive Framework for Neural Text Generation"), written from the paper:
of the k most likely next tokens v, pick the one that maximises

    (1 - alpha) * p(v | x<t)  -  alpha * max_j cos(h_v, h_j)

where h_v is the model's last hidden state (lm_head's input) after v, and h_j those of every position of the context
so far (the prompt's and each chosen token's): a likely token whose representation repeats none of the context's.

In the one decoding loop a contrastive run has k rows: each step the rows are fed the k candidates (one each), which
gives every candidate's h_v and, with it, the next distribution after it; the best candidate is chosen, and the batch
copies its row to all k rows, which are fed the next k candidates. The first step only feeds the candidates, so a run's
tokens come one step after they are fed."""

from __future__ import annotations

import numpy as np


def degeneration_penalty(candidates: np.ndarray, context: np.ndarray) -> np.ndarray:
    """The maximum cosine similarity of each candidate's hidden state (k, E) with the context's (T, E): (k,)."""
    c = candidates / np.linalg.norm(candidates, axis=1, keepdims=True)  # (k, E)
    h = context / np.linalg.norm(context, axis=1, keepdims=True)  # (T, E)
    return (h @ c.T).max(axis=0)  # (T, k) -> (k,)


def contrastive_scores(probs: np.ndarray, candidates: np.ndarray, context: np.ndarray, alpha: float) -> np.ndarray:
    """(1 - alpha) * p(v) - alpha * degeneration penalty, for each of the k candidates: (k,)."""
    return (1.0 - alpha) * probs - alpha * degeneration_penalty(candidates, context)


class ContrastiveSearch:
    """One run's contrastive search: the context's hidden states and the candidates its rows were fed last."""

    def __init__(self, alpha: float, k: int):
        self.alpha, self.k = alpha, k
        self.context: np.ndarray | None = None  # (T, E) float32: the prompt's positions, then each chosen token's
        self.tokens: list[int] | None = None  # the k candidates fed last (None before the first step)
        self.probs: np.ndarray | None = None  # (k,) their probabilities (after the processors)
        self.records: list = []  # their token records (records.TokenRecord), made when they were chosen as candidates

    def start(self, prompt_hidden: np.ndarray) -> None:
        self.context = np.array(prompt_hidden, dtype=np.float32)  # (T, E), its own copy

    def pick(self, hidden: np.ndarray) -> int:
        """The best of the candidates whose hidden states the rows give (k, E), and it joins the context."""
        best = int(np.argmax(contrastive_scores(self.probs, hidden, self.context, self.alpha)))
        self.context = np.concatenate([self.context, hidden[best: best + 1]])  # (T + 1, E)
        return best
