"""What an experiment measures at the last position: a token's log-probability, or the logit difference of two."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .intervention import ExperimentError

MAX_EXPERIMENT_TOKENS = 256  # a prompt's tokens (the Attention tab's window): a head scan of GPT-2 small is 144 of them


def encode_prompt(codec, prompt, field: str = "prompt") -> list[int]:
    """A prompt as token ids: text, or a list of ids as the API may send; refused when empty or too long."""
    if isinstance(prompt, (list, tuple)):
        ids = list(prompt)
        if not ids or any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(codec) for i in ids):
            raise ExperimentError(key="experiments.bad_ids", field=field, most=len(codec) - 1)
    else:
        ids = codec.encode(prompt or "")
    if not ids:
        raise ExperimentError(key="experiments.empty_prompt", field=field)
    if len(ids) > MAX_EXPERIMENT_TOKENS:
        raise ExperimentError(key="experiments.too_long", field=field, tokens=len(ids), most=MAX_EXPERIMENT_TOKENS)
    return ids


def bare_ids(codec, text: str) -> list[int]:
    """`text`'s token ids without the start token a BERT-style tokenizer puts first ([CLS] of the Chinese models)."""
    ids = codec.encode(text or "")
    return ids[1:] if ids and codec.bos_id is not None and ids[0] == codec.bos_id else ids


def token_of(codec, text: str, field: str) -> int:
    """The one token `text` is (" Mary" with its space); refused, with what it is instead, when it is not one token."""
    if isinstance(text, int) and not isinstance(text, bool) and 0 <= text < len(codec):
        return text
    ids = bare_ids(codec, text) if isinstance(text, str) else []
    if len(ids) != 1:
        raise ExperimentError(key="experiments.not_one_token", field=field, text=str(text), count=len(ids),
                              pieces=" | ".join(codec.label(i) for i in ids) or "—")
    return ids[0]


@dataclass(frozen=True)
class Target:
    """log p(`token`) at the last position, or with a `contrast`, logit(`token`) - logit(`contrast`) there."""

    token: int
    contrast: int | None = None

    @classmethod
    def of(cls, codec, token, contrast=None) -> "Target":
        return cls(token_of(codec, token, "target"), token_of(codec, contrast, "contrast") if contrast not in (None, "") else None)

    def measure(self, logits: torch.Tensor) -> torch.Tensor:
        """`logits` (N, V) at the last position -> (N,) float64."""
        logits = logits.double()
        if self.contrast is None:
            return torch.log_softmax(logits, dim=-1)[:, self.token]
        return logits[:, self.token] - logits[:, self.contrast]

    def kind(self) -> str:
        return "logprob" if self.contrast is None else "logit_diff"
