"""Activation patching: run a corrupted prompt with one activation taken from a clean one, and measure how much of the
clean logit difference each patch restores (0 = none of it, 1 = all of it)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .hooks import hooked, row_edits
from .intervention import ExperimentError
from .target import Target

PATCH_KINDS = ("resid", "heads", "mlp")
PATCH_ROWS = 64  # variants per forward pass: 64 x 16 tokens of GPT-2 small is a few MB a layer


@dataclass
class PatchGrid:
    """`restored[i, j]` = (patched - corrupted) / (clean - corrupted) of the target's logit difference. Rows and columns:
    resid: entry l (0..L) x position; heads: layer x head (every position); mlp: layer x 1 (every position)."""

    kind: str
    clean: float  # the clean prompt's logit difference
    corrupted: float  # the corrupted prompt's
    restored: np.ndarray  # (rows, columns) float64
    labels: list[str] = field(default_factory=list)  # the columns' labels (resid: the clean prompt's tokens)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "clean_logit_diff": self.clean, "corrupted_logit_diff": self.corrupted,
                "restored": self.restored.tolist(), "columns": self.labels}


def check_lengths(clean_ids: list[int], corrupted_ids: list[int]) -> None:
    if len(clean_ids) != len(corrupted_ids):
        raise ExperimentError(key="experiments.lengths", field="corrupted", clean=len(clean_ids), corrupted=len(corrupted_ids))


@torch.inference_mode()
def patch(model, clean_ids: list[int], corrupted_ids: list[int], target: Target, kind: str = "resid",
          cells: list[tuple[int, int]] | None = None) -> PatchGrid:
    """The patching grid of `kind` (see PatchGrid), or only `cells` (row, column) of it (the others NaN). The clean
    and corrupted runs are rows 0 and 1 of the first pass, so every number comes from the same batched computation."""
    check_lengths(clean_ids, corrupted_ids)
    if target.contrast is None:
        raise ExperimentError(key="experiments.needs_contrast", field="contrast")
    if kind not in PATCH_KINDS:
        raise ExperimentError(key="experiments.bad_kind", field="kind", value=kind, kinds=", ".join(PATCH_KINDS))
    config = model.config
    n_layer, n_head, T = config.n_layer, config.n_head, len(clean_ids)
    head_dim = config.n_embd // n_head
    device = next(model.parameters()).device
    shape = {"resid": (n_layer + 1, T), "heads": (n_layer, n_head), "mlp": (n_layer, 1)}[kind]
    point_kind = {"resid": "resid", "heads": "heads", "mlp": "mlp"}[kind]
    points = tuple((point_kind, layer) for layer in range(shape[0]))
    with hooked(model, capture=points) as seen:  # the clean run's activations at every point
        model(input_ids=torch.tensor([clean_ids], device=device), logits_to_keep=1)
    clean = {point: seen[point][0][0] for point in points}  # (T, width)

    def patched(row: int, column: int, start: int):
        """The edit of cell (row, column) in a pass that begins at position `start` (the positions before it cached)."""
        point = points[row]
        source = clean[point]
        cols = slice(column * head_dim, (column + 1) * head_dim) if kind == "heads" else slice(None)
        where = column if kind == "resid" else slice(None)  # resid: one position; heads, mlp: every position

        def f(x: torch.Tensor) -> torch.Tensor:  # (T - start, width)
            x[(where - start) if kind == "resid" else where, cols] = source[where, cols]
            return x
        return {point: f}

    cells = cells if cells is not None else [(r, c) for r in range(shape[0]) for c in range(shape[1])]
    for r, c in cells:
        if not (0 <= r < shape[0] and 0 <= c < shape[1]):
            raise ExperimentError(key="experiments.bad_cell", field="cells", row=r, column=c, rows=shape[0], columns=shape[1])
    ids = torch.tensor([clean_ids, corrupted_ids], device=device)  # (2, T)
    # Passes of (start, [(cell, edits)]), rows of one batch each; the first holds the clean and the corrupted prompt as
    # they are (rows 0 and 1, cell None). A residual patch at position p changes nothing before p (attention looks
    # back only), so a pass of residual patches at positions >= p starts at p, the corrupted prompt's positions before
    # it cached: the model's own forward over fewer positions (a 13 x 16 grid: about 35% fewer). Cells are taken in
    # position order, PATCH_ROWS a pass: few passes matter as much as few positions on a CPU, where every pass reads
    # all the weights.
    ordered = sorted(cells, key=lambda cell: cell[1]) if kind == "resid" else list(cells)
    variants = [None, None] + ordered
    passes = []
    for i in range(0, len(variants), PATCH_ROWS):
        chunk = variants[i:i + PATCH_ROWS]
        begin = 0 if kind != "resid" or chunk[0] is None else chunk[0][1]
        passes.append((begin, [(cell, {} if cell is None else patched(*cell, begin)) for cell in chunk]))
    done, values = [], []
    for n, (start, chunk) in enumerate(passes):
        rows = torch.stack([ids[0] if n == 0 and i == 0 else ids[1] for i in range(len(chunk))])[:, start:]  # (rows, T - start)
        cache = None
        if start:
            cache = model(input_ids=ids[1:2, :start], use_cache=True, logits_to_keep=1).past_key_values  # the corrupted prefix
            cache.batch_repeat_interleave(len(chunk))
        with hooked(model, row_edits([edits for _, edits in chunk])):
            logits = model(input_ids=rows, past_key_values=cache, use_cache=cache is not None, logits_to_keep=1).logits[:, -1]
        values.append(target.measure(logits).cpu())  # (rows,)
        done += [cell for cell, _ in chunk]
    measured = torch.cat(values).numpy()
    clean_diff, corrupted_diff = float(measured[0]), float(measured[1])
    if abs(clean_diff - corrupted_diff) < 1e-6:
        raise ExperimentError(key="experiments.no_difference", field="corrupted", diff=clean_diff)
    restored = np.full(shape, np.nan)
    for (r, c), value in zip(done[2:], measured[2:]):
        restored[r, c] = (value - corrupted_diff) / (clean_diff - corrupted_diff)
    return PatchGrid(kind, clean_diff, corrupted_diff, restored)


@torch.inference_mode()
def patched_logits(model, clean_ids: list[int], corrupted_ids: list[int], point: tuple[str, int],
                   positions: list[int] | None = None) -> torch.Tensor:
    """The corrupted prompt's logits (T, V) with `point`'s activation at `positions` (None: every one) taken from the
    clean prompt: one patch, whole logits, for checking and for a closer look at one cell."""
    check_lengths(clean_ids, corrupted_ids)
    device = next(model.parameters()).device
    with hooked(model, capture=(point,)) as seen:
        model(input_ids=torch.tensor([clean_ids], device=device))
    source = seen[point][0]  # (1, T, width)
    where = slice(None) if positions is None else torch.tensor(positions, dtype=torch.long, device=device)

    def edit(x: torch.Tensor) -> torch.Tensor:  # (1, T, width)
        x = x.clone()
        x[:, where] = source[:, where]
        return x

    with hooked(model, {point: edit}):
        return model(input_ids=torch.tensor([corrupted_ids], device=device)).logits[0].float()
