"""Compare two runs of the same prompt, settings and seed on any two sides (model, backend, variant): where and how they differ."""

from __future__ import annotations

from dataclasses import dataclass

from ..records import GenerationResult
from ..text import TokenCodec


@dataclass
class Comparison:
    first_divergence: int | None  # index into the generated tokens where the two first differ; None if identical
    same_text: bool
    # Per generated position up to the divergence (inclusive): both raw probabilities of the chosen token.
    positions: list[int]
    probs_a: list[float]
    probs_b: list[float | None]  # None: run b did not rank a's token in its recorded top-k
    max_abs_prob_diff: float
    tokens_per_s_a: float | None
    tokens_per_s_b: float | None

    @property
    def speedup_b_over_a(self) -> float | None:
        if self.tokens_per_s_a and self.tokens_per_s_b:
            return self.tokens_per_s_b / self.tokens_per_s_a
        return None


def same_vocabulary(a: TokenCodec, b: TokenCodec) -> bool:
    """True when every token id means the same token on both sides, so two runs can be compared token by token.

    A fine-tuned model keeps its base model's tokenizer; an English and a Chinese model do not. The whole
    vocabulary is compared (about 10 ms for GPT-2's 50,257 tokens): two tokenizers of one size can still
    differ in a few merges.
    """
    if a is b:
        return True
    return (len(a) == len(b) and a.wordpiece == b.wordpiece and a.start_id == b.start_id and a.eos_ids == b.eos_ids
            and a.tokenizer.get_vocab() == b.tokenizer.get_vocab())


def compare(a: GenerationResult, b: GenerationResult) -> Comparison:
    """Runs `a` and `b` agree token for token until `first_divergence`; after it their contexts differ, so
    probabilities are compared only up to (and including) that position. Both must share a vocabulary
    (`same_vocabulary`): otherwise equal ids name different tokens."""
    ids_a, ids_b = [t.token_id for t in a.tokens], [t.token_id for t in b.tokens]
    first = next((i for i, (x, y) in enumerate(zip(ids_a, ids_b)) if x != y), None)
    if first is None and len(ids_a) != len(ids_b):
        first = min(len(ids_a), len(ids_b))
    end = min(len(ids_a), len(ids_b)) if first is None else min(first + 1, len(ids_a), len(ids_b))
    # Compare each side's probability of the token run `a` chose: at the divergence, that is how
    # much less (or more) `b` liked `a`'s choice.
    probs_a = [a.tokens[i].raw_prob for i in range(end)]
    probs_b = [b.tokens[i].raw_prob if ids_b[i] == ids_a[i] else next((alt.prob for alt in b.tokens[i].top if alt.token_id == ids_a[i]), None)
               for i in range(end)]
    return Comparison(
        first_divergence=first,
        same_text=a.text == b.text,
        positions=[a.tokens[i].position for i in range(end)],
        probs_a=probs_a,
        probs_b=probs_b,
        max_abs_prob_diff=max((abs(x - y) for x, y in zip(probs_a, probs_b) if y is not None), default=0.0),
        tokens_per_s_a=a.decode_tokens_per_s,
        tokens_per_s_b=b.decode_tokens_per_s,
    )
