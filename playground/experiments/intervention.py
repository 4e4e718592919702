"""What an experiment does to the model, declared once: heads, neurons and sublayers knocked out, a steering direction
added; validated against the model, saved with a run, turned into hooks' edits (`edits_for`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

import torch

from ..config import as_float, as_int
from ..errors import PlaygroundError
from .hooks import Edit, Point, hooked

MODES = ("zero", "mean")
MAX_STRENGTH = 1000.0
MAX_STEER_PROMPTS = 16  # prompts on each side of a steering direction


class ExperimentError(PlaygroundError):
    """An experiment that cannot run as asked: a head or layer the model lacks, prompts of different lengths, a
    backend without hooks. The message says what to change."""


@dataclass(frozen=True)
class Intervention:
    """Knock-outs and a steering direction. `mode` "zero" replaces what is knocked out by zeros, "mean" by its mean
    over the positions of the reference text (the prompt being scored or continued). `steer_layer` l (0..L, an entry
    of the residual stream; None: no steering) gets `steer_strength` x the mean residual difference between the
    `steer_positive` and `steer_negative` prompts added at every position. Empty: the model as it is."""

    heads: tuple[tuple[int, int], ...] = ()  # (layer, head)
    neurons: tuple[tuple[int, int], ...] = ()  # (layer, neuron) of the MLP's hidden layer
    attn_layers: tuple[int, ...] = ()  # whole attention sublayers
    mlp_layers: tuple[int, ...] = ()  # whole MLP sublayers
    mode: str = "zero"
    steer_layer: int | None = None
    steer_strength: float = 0.0
    steer_positive: tuple[str, ...] = ()
    steer_negative: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.heads or self.neurons or self.attn_layers or self.mlp_layers or self.steer_layer is not None)

    @property
    def ablates(self) -> bool:
        return bool(self.heads or self.neurons or self.attn_layers or self.mlp_layers)

    @classmethod
    def from_user(cls, **values: Any) -> "Intervention":
        """From a form or a JSON request: pairs as "1.2, 0.3" or [[1, 2], [0, 3]], layers as "0, 2" or [0, 2], prompt
        sets as lines or lists, None or "" for nothing. Checked for form only; `check(config)` checks it against a model."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ExperimentError(key="experiments.unknown_field", unknown=", ".join(unknown), known=", ".join(sorted(names)))
        clean: dict[str, Any] = {}
        for name, value in values.items():
            if value is None or value == "" or value == []:
                continue
            if name in ("heads", "neurons"):
                clean[name] = _pairs(name, value)
            elif name in ("attn_layers", "mlp_layers"):
                items = re.split(r"[\s,;，、]+", value.strip()) if isinstance(value, str) else value
                clean[name] = tuple(sorted(set(as_int(name, v) for v in items if v != "")))
            elif name == "mode":
                if value not in MODES:
                    raise ExperimentError(key="experiments.bad_mode", field="mode", value=value, modes=", ".join(MODES))
                clean[name] = value
            elif name == "steer_layer":
                clean[name] = as_int(name, value)
            elif name == "steer_strength":
                try:
                    strength = as_float(name, value)
                except PlaygroundError:
                    raise ExperimentError(key="experiments.not_number", field=name, value=value) from None
                if abs(strength) > MAX_STRENGTH:
                    raise ExperimentError(key="experiments.strength_range", field=name, value=strength, most=MAX_STRENGTH)
                clean[name] = strength
            else:  # steer_positive, steer_negative
                items = value.splitlines() if isinstance(value, str) else value
                if not isinstance(items, (list, tuple)) or not all(isinstance(s, str) for s in items):
                    raise ExperimentError(key="experiments.not_prompts", field=name)
                clean[name] = tuple(s for s in (s.strip() for s in items) if s)[:MAX_STEER_PROMPTS]
        return cls(**clean)

    def check(self, config) -> "Intervention":
        """Every layer, head and neuron within `config`'s model (a transformers GPT2Config); steering has prompts."""
        n_layer, n_head, n_inner = config.n_layer, config.n_head, config.n_inner or 4 * config.n_embd
        for layer in (*self.attn_layers, *self.mlp_layers, *(l for l, _ in self.heads), *(l for l, _ in self.neurons)):
            if not 0 <= layer < n_layer:
                raise ExperimentError(key="experiments.bad_layer", field="layer", value=layer, most=n_layer - 1)
        for layer, head in self.heads:
            if not 0 <= head < n_head:
                raise ExperimentError(key="experiments.bad_head", field="heads", layer=layer, head=head, most=n_head - 1)
        for layer, neuron in self.neurons:
            if not 0 <= neuron < n_inner:
                raise ExperimentError(key="experiments.bad_neuron", field="neurons", layer=layer, neuron=neuron, most=n_inner - 1)
        if self.steer_layer is not None:
            if not 0 <= self.steer_layer <= n_layer:
                raise ExperimentError(key="experiments.bad_steer_layer", field="steer_layer", value=self.steer_layer, most=n_layer)
            if not self.steer_positive or not self.steer_negative:
                raise ExperimentError(key="experiments.no_steer_prompts", field="steer_positive")
        return self

    def to_dict(self) -> dict:
        """As JSON (lists), the form a run saves and `/intervene` takes; only what is set."""
        data = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                data[f.name] = [list(v) if isinstance(v, tuple) else v for v in value] if isinstance(value, tuple) else value
        return data

    @classmethod
    def from_dict(cls, data: dict | None) -> "Intervention":
        return cls.from_user(**(data or {}))

    def describe(self) -> str:
        """One line for a person: "heads 0.1 2.3 · mlp 1 · zero · steer@2 ×4.0" (the same in both languages: names of points)."""
        parts = []
        if self.heads:
            parts.append("heads " + " ".join(f"{l}.{h}" for l, h in self.heads))
        if self.neurons:
            parts.append("neurons " + " ".join(f"{l}.{n}" for l, n in self.neurons))
        if self.attn_layers:
            parts.append("attn " + " ".join(map(str, self.attn_layers)))
        if self.mlp_layers:
            parts.append("mlp " + " ".join(map(str, self.mlp_layers)))
        if self.ablates:
            parts.append(self.mode)
        if self.steer_layer is not None:
            parts.append(f"steer@{self.steer_layer} ×{self.steer_strength:g}")
        return " · ".join(parts) or "—"


def _pairs(name: str, value: Any) -> tuple[tuple[int, int], ...]:
    """"1.2, 0.3" or [[1, 2], [0, 3]] or ["1.2"] -> ((0, 3), (1, 2)): sorted, each once."""
    items = re.split(r"[\s,;，、]+", value.strip()) if isinstance(value, str) else list(value)
    pairs = set()
    for item in items:
        if item == "":
            continue
        parts = item.split(".") if isinstance(item, str) else item
        if not isinstance(parts, (list, tuple)) or len(parts) != 2:
            raise ExperimentError(key="experiments.bad_pair", field=name, value=str(item), name=name)
        try:
            pairs.add((as_int(name, parts[0]), as_int(name, parts[1])))
        except PlaygroundError:
            raise ExperimentError(key="experiments.bad_pair", field=name, value=str(item), name=name) from None
    return tuple(sorted(pairs))


# --- the edits that do it ------------------------------------------------------------------------------------------


def reference_means(model, ids: list[int], points: list[Point]) -> dict[Point, torch.Tensor]:
    """Each point's activation averaged over the positions of `ids`, by one plain forward pass: {point: (width,)}."""
    device = next(model.parameters()).device
    with torch.inference_mode(), hooked(model, capture=tuple(points)) as seen:
        model(input_ids=torch.tensor([ids], device=device), logits_to_keep=1)
    return {point: seen[point][0][0].mean(dim=0) for point in points}  # (T, width) -> (width,)


def steering_direction(model, codec, layer: int, positive: tuple[str, ...], negative: tuple[str, ...]) -> torch.Tensor:
    """The mean residual at entry `layer` over the `positive` prompts minus the same over the `negative` ones: each
    prompt's residual is first averaged over its positions, then the prompts of a side are averaged. (d,)"""
    def side(prompts: tuple[str, ...]) -> torch.Tensor:
        means = []
        for prompt in prompts:
            ids = codec.encode(prompt) or [codec.start_id]
            means.append(reference_means(model, ids, [("resid", layer)])[("resid", layer)])
        return torch.stack(means).mean(dim=0)  # (d,)

    return side(positive) - side(negative)


def edits_for(intervention: Intervention, model, codec, reference_ids: list[int]) -> dict[Point, Edit]:
    """The hooks' edits that carry out `intervention` on `model` (checked against it first). Means (mode "mean") are
    taken over `reference_ids` and the steering direction from its prompts, once, here: the edits are then fixed,
    so every later pass (a prefill, each decoding step) changes the same things by the same amounts."""
    config = model.config
    intervention.check(config)
    head_dim = config.n_embd // config.n_head
    wanted: dict[Point, list] = {}  # point -> column slices (None: the whole width)
    for layer, head in intervention.heads:
        wanted.setdefault(("heads", layer), []).append(slice(head * head_dim, (head + 1) * head_dim))
    for layer, neuron in intervention.neurons:
        wanted.setdefault(("neurons", layer), []).append(slice(neuron, neuron + 1))
    for layer in intervention.attn_layers:
        wanted[("attn", layer)] = [slice(None)]
    for layer in intervention.mlp_layers:
        wanted[("mlp", layer)] = [slice(None)]
    means = reference_means(model, reference_ids, list(wanted)) if intervention.mode == "mean" and wanted else {}
    edits: dict[Point, Edit] = {}
    for point, columns in wanted.items():
        edits[point] = _replace(columns, means.get(point))
    if intervention.steer_layer is not None:
        direction = steering_direction(model, codec, intervention.steer_layer, intervention.steer_positive,
                                       intervention.steer_negative)
        shift = intervention.steer_strength * direction  # (d,)
        point = ("resid", intervention.steer_layer)
        before = edits.get(point)
        edits[point] = (lambda x: x + shift) if before is None else (lambda x: before(x) + shift)
    return edits


def _replace(columns: list[slice], mean: torch.Tensor | None) -> Edit:
    """An edit that sets `columns` of every position to zero, or to `mean`'s values (width,)."""
    def edit(x: torch.Tensor) -> torch.Tensor:  # (B, T, width)
        x = x.clone()
        for cols in columns:
            x[..., cols] = 0 if mean is None else mean[cols]
        return x
    return edit
