"""The try-this tasks' checks: each reads numbers of the learner's own run (its token records, its samples, its
attention, its logit lens) and says whether the task is met. Pure functions of plain data, so tests need no page."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..records import GenerationResult, TokenRecord


@dataclass(frozen=True)
class Verdict:
    """Whether a task is met, and the locale key (with its parameters) that says why or what to try next."""

    met: bool
    key: str
    params: dict = field(default_factory=dict)


def _continues(previous: bytes, current: bytes) -> bool:
    """`current` goes on inside the word or character that `previous` ends in: it starts with a UTF-8 continuation byte
    (the rest of a character cut into tokens), or both sides are letters or digits of a Latin-script word."""
    if not previous or not current:
        return False
    if 0x80 <= current[0] <= 0xBF:
        return True
    before, after = chr(previous[-1]), chr(current[0])
    return previous[-1] < 0x80 and current[0] < 0x80 and before.isalnum() and after.isalnum()


def split_word(result: GenerationResult) -> Verdict:
    """Tokens: the prompt holds a word or a character that the tokenizer cut into two tokens or more."""
    records = result.prompt_tokens
    for previous, current in zip(records, records[1:]):
        if _continues(previous.bytes, current.bytes):
            return Verdict(True, "learn.check.split_word_met", {"left": previous.text, "right": current.text})
    return Verdict(False, "learn.check.split_word_not", {"tokens": len(records)})


def not_top_choice(result: GenerationResult) -> Verdict:
    """Logits and softmax: some generated token was not the model's most likely one (sampling, not argmax)."""
    for record in result.tokens:
        if record.rank is not None and record.rank > 1:
            return Verdict(True, "learn.check.not_top_met",
                           {"token": record.text, "rank": record.rank, "prob": f"{100 * (record.raw_prob or 0):.1f}%"})
    return Verdict(False, "learn.check.not_top_not", {"tokens": len(result.tokens)})


def identical_samples(samples: list[list[int]]) -> Verdict:
    """Decoding: a run of two samples or more whose samples are all the same tokens (greedy, or top-k 1)."""
    if len(samples) < 2:
        return Verdict(False, "learn.check.identical_few", {"count": len(samples)})
    if all(sample == samples[0] for sample in samples):
        return Verdict(True, "learn.check.identical_met", {"count": len(samples)})
    different = sum(1 for sample in samples if sample != samples[0])
    return Verdict(False, "learn.check.identical_not", {"count": len(samples), "different": different})


def head_scores(weights: np.ndarray, offset: int) -> np.ndarray:
    """Each head's mean attention from a query to the key `offset` tokens before it (1: the previous token), over the
    queries that have one; `weights` (L, H, T, T) -> (L, H)."""
    t = weights.shape[-1]
    q = np.arange(offset, t)  # (T - offset,) the queries that have a key `offset` tokens back
    return weights[:, :, q, q - offset].mean(-1)  # (L, H)


def first_token_scores(weights: np.ndarray) -> np.ndarray:
    """(layers, heads): each head's mean attention to the sequence's first token, over queries 1 .. T-1."""
    return weights[:, :, 1:, 0].mean(-1)  # (L, H)


def uniform_share(t: int, offset: int = 1) -> float:
    """What a head that spreads its attention evenly over the causal window gives one key, on average: 1/(q+1)."""
    return float(np.mean([1.0 / (q + 1) for q in range(offset, t)]))


def best_head(scores: np.ndarray, layer: int, head: int, t: int, key: str) -> Verdict:
    """The chosen head is the one of the run's heads with the highest score (to 1e-6), and beats even spreading."""
    chosen, best = float(scores[layer, head]), float(scores.max())
    where = np.unravel_index(int(scores.argmax()), scores.shape)
    params = {"layer": layer, "head": head, "score": f"{chosen:.2f}", "best": f"{best:.2f}",
              "uniform": f"{uniform_share(t):.2f}", "best_layer": int(where[0]), "best_head": int(where[1])}
    if chosen >= best - 1e-6 and chosen > uniform_share(t):
        return Verdict(True, f"learn.check.{key}_met", params)
    return Verdict(False, f"learn.check.{key}_not", params)


def previous_token_head(weights: np.ndarray, layer: int, head: int) -> Verdict:
    """Self-attention: the chosen head is the run's head that looks most at the token just before each query."""
    if weights.shape[-1] < 3:
        return Verdict(False, "learn.check.too_short", {})
    return best_head(head_scores(weights, 1), layer, head, weights.shape[-1], "previous_head")


def first_token_head(weights: np.ndarray, layer: int, head: int) -> Verdict:
    """Multi-head: the chosen head is the run's head that looks most at the first token (an 'attention sink')."""
    if weights.shape[-1] < 3:
        return Verdict(False, "learn.check.too_short", {})
    return best_head(first_token_scores(weights), layer, head, weights.shape[-1], "first_head")


def early_prediction(lens: list[dict], record: TokenRecord) -> Verdict:
    """Residual stream and logit lens: at the chosen position, a layer before the last already ranked the token first."""
    early = [row["layer"] for row in lens[:-1] if row["chosen_rank"] == 1]
    if early:
        return Verdict(True, "learn.check.lens_met", {"token": record.text, "layer": early[0], "layers": len(lens) - 1})
    return Verdict(False, "learn.check.lens_not", {"token": record.text, "rank": lens[-1]["chosen_rank"]})
