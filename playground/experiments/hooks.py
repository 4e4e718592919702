"""The places inside GPT-2 an experiment reads or changes, and torch hooks that read or change them on this thread only.

Nothing of GPT-2's forward is written here: the model runs its own `forward`, and hooks on its modules see (and may
replace) what flows through five kinds of point, each of shape (B, T, width):

    resid   entry l of the residual stream, l = 0..L: the input of block l (l < L) or of the final layer norm (l = L);
            entry 0 is the embedding (token + position), the convention of `Backend.hidden_states`       width d
    heads   the heads' outputs of layer l, concatenated, before the attention's output projection
            (the input of `attn.c_proj`): head h is columns h*head_dim .. (h+1)*head_dim                    width d
    attn    the attention sublayer's output of layer l (what it adds to the residual)                     width d
    mlp     the MLP sublayer's output of layer l (what it adds to the residual)                           width d
    neurons the MLP's hidden activations of layer l (the output of `mlp.act`)                              width 4d

The model is shared between threads (another user's run may be decoding on it at the same moment): every hook
returns at once on any thread but the one that installed it, so an experiment never leaks into anyone else's pass.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

POINTS = ("resid", "heads", "attn", "mlp", "neurons")
Point = tuple[str, int]  # (kind, layer)
# An edit takes a point's activation (B, T, width) and returns the one the model goes on with (a new tensor).
Edit = Callable[[torch.Tensor], torch.Tensor]


def _module(model, point: Point):
    """The module a point's hook goes on, and whether the point is its input (a pre-hook) or its output."""
    kind, layer = point
    transformer = model.transformer
    if kind == "resid":
        return (transformer.h[layer] if layer < len(transformer.h) else transformer.ln_f), "input"
    block = transformer.h[layer]
    return {"heads": (block.attn.c_proj, "input"), "attn": (block.attn, "output"), "mlp": (block.mlp, "output"),
            "neurons": (block.mlp.act, "output")}[kind]


@contextmanager
def hooked(model, edits: dict[Point, Edit] | None = None, capture: tuple[Point, ...] = ()) -> Iterator[dict[Point, list]]:
    """While the block runs, this thread's forward passes through `model` go on with `edits` applied, and the
    activations at `capture` are collected (after any edit at the same point): yields {point: [tensor per pass]}."""
    thread, seen = threading.get_ident(), {point: [] for point in capture}
    handles = []
    for point in dict.fromkeys([*(edits or {}), *capture]):
        edit = (edits or {}).get(point)
        module, side = _module(model, point)

        def change(x: torch.Tensor, edit=edit, point=point) -> torch.Tensor:
            if edit is not None:
                x = edit(x)
            if point in seen:
                seen[point].append(x)
            return x

        if side == "input":
            def pre_hook(_module, args, change=change):
                if threading.get_ident() == thread:
                    return (change(args[0]), *args[1:])

            handles.append(module.register_forward_pre_hook(pre_hook))
        else:
            def hook(_module, _args, output, change=change):
                if threading.get_ident() == thread:
                    if isinstance(output, tuple):  # the attention returns (output, weights)
                        return (change(output[0]), *output[1:])
                    return change(output)

            handles.append(module.register_forward_hook(hook))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def row_edits(edits: list[dict[Point, Callable[[torch.Tensor], torch.Tensor]]]) -> dict[Point, Edit]:
    """One forward pass of len(edits) rows where row r gets `edits[r]`: {point: f} with f taking and returning one
    row's activation (T, width). Rows without an edit at a point go through it unchanged."""
    by_point: dict[Point, list[tuple[int, Callable]]] = {}
    for r, row in enumerate(edits):
        for point, f in row.items():
            by_point.setdefault(point, []).append((r, f))

    def edit_of(changes: list[tuple[int, Callable]]) -> Edit:
        def edit(x: torch.Tensor) -> torch.Tensor:  # (B, T, width)
            x = x.clone()
            for r, f in changes:
                x[r] = f(x[r])
            return x
        return edit

    return {point: edit_of(changes) for point, changes in by_point.items()}
