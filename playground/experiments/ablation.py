"""Ablation: re-score a text with heads, neurons or sublayers knocked out, and the head scan (each head in turn)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .hooks import hooked, row_edits
from .intervention import Intervention, edits_for, reference_means
from .target import Target

RESCORE_TOP = 5  # alternatives shown per position
SCAN_ROWS = 48  # variants per forward pass of a head scan: 48 x 32 tokens x 3072 MLP floats = 19 MB a layer for GPT-2 small


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def rescore(model, codec, ids: list[int], intervention: Intervention) -> dict:
    """Every position of `ids` scored by the model as it is and under `intervention` (means over `ids` itself): for
    token i (from 1), its probability and rank before and after, the change, and the top 5 after. Two forward passes."""
    x = torch.tensor([ids], device=_device(model))  # (1, T)
    base = model(input_ids=x).logits[0, :-1].float()  # (T - 1, V): position i - 1 predicts token i
    with hooked(model, edits_for(intervention, model, codec, ids)):
        after = model(input_ids=x).logits[0, :-1].float()  # (T - 1, V)
    target = torch.tensor(ids[1:], device=base.device)[:, None]  # (T - 1, 1)
    rows = []
    for name, logits in (("base", base), ("after", after)):
        logp = torch.log_softmax(logits, dim=-1)  # (T - 1, V)
        chosen = logp.gather(1, target)[:, 0]  # (T - 1,)
        rank = (logp > chosen[:, None]).sum(dim=1) + 1  # (T - 1,)
        rows.append((chosen.exp().cpu().tolist(), rank.cpu().tolist(), logp.topk(RESCORE_TOP, dim=-1)))
    (p0, r0, _), (p1, r1, (top_logp, top_ids)) = rows
    positions = []
    for i, token in enumerate(ids[1:]):
        positions.append({
            "position": i + 1, "token_id": token, "text": codec.label(token, ids[i]),
            "prob": p0[i], "rank": r0[i], "ablated_prob": p1[i], "ablated_rank": r1[i], "change": p1[i] - p0[i],
            "top": [{"token_id": t, "text": codec.label(t, ids[i]), "prob": math.exp(lp)}
                    for t, lp in zip(top_ids[i].tolist(), top_logp[i].tolist())],
        })
    return {"intervention": intervention.to_dict(), "positions": positions}


@dataclass
class HeadScan:
    """The change in the target's measure when each head is knocked out alone: `change[l, h]` = measure with head
    (l, h) ablated - `base`. `kind`: "logprob" or "logit_diff"."""

    base: float
    change: np.ndarray  # (L, H) float64
    kind: str
    mode: str

    def to_dict(self) -> dict:
        return {"base": self.base, "kind": self.kind, "mode": self.mode, "change": self.change.tolist()}


@torch.inference_mode()
def head_scan(model, ids: list[int], target: Target, mode: str = "zero") -> HeadScan:
    """Knock out each of the L x H heads in turn (zeros, or its mean over `ids`'s positions) and measure `target` at
    the last position: the variants are rows of a batch, SCAN_ROWS at a time, plus one row of the model as it is.
    Only the last position's logits are computed (`logits_to_keep=1`)."""
    config = model.config
    n_layer, n_head = config.n_layer, config.n_head
    head_dim = config.n_embd // n_head
    points = [("heads", layer) for layer in range(n_layer)]
    means = reference_means(model, ids, points) if mode == "mean" else {}

    def knock_out(layer: int, head: int):
        cols = slice(head * head_dim, (head + 1) * head_dim)
        mean = means.get(("heads", layer))

        def f(row: torch.Tensor) -> torch.Tensor:  # (T, d): one row's heads, concatenated
            row[:, cols] = 0 if mean is None else mean[cols]
            return row
        return {("heads", layer): f}

    variants = [{}] + [knock_out(layer, head) for layer in range(n_layer) for head in range(n_head)]  # row 0: as it is
    measures = []
    x = torch.tensor([ids], device=_device(model))  # (1, T)
    for start in range(0, len(variants), SCAN_ROWS):
        chunk = variants[start:start + SCAN_ROWS]
        with hooked(model, row_edits(chunk)):
            logits = model(input_ids=x.expand(len(chunk), -1), logits_to_keep=1).logits[:, -1]  # (rows, V)
        measures.append(target.measure(logits).cpu())
    values = torch.cat(measures).numpy()  # (1 + L * H,)
    return HeadScan(float(values[0]), (values[1:] - values[0]).reshape(n_layer, n_head), target.kind(), mode)


@torch.inference_mode()
def measure(model, codec, ids: list[int], target: Target, intervention: Intervention | None = None) -> float:
    """`target`'s measure at the last position of `ids`, under `intervention` (means over `ids`) when given."""
    x = torch.tensor([ids], device=_device(model))
    edits = edits_for(intervention, model, codec, ids) if intervention is not None else {}
    with hooked(model, edits):
        logits = model(input_ids=x, logits_to_keep=1).logits[:, -1]  # (1, V)
    return float(target.measure(logits)[0])
