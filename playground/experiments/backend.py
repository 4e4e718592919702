"""A PyTorch backend with an intervention: the shared model's weights, its hooks active in this backend's passes only.

An intervened run is a run: it decodes in the one loop (generation.py, batching.py) on this backend, which has a
decoding batch of its own (`batch_for` is per backend), so its rows never step beside plain runs' rows. The hooks
are installed around each of its forward passes and keep to the calling thread (hooks.py): a plain run on the same
model at the same moment is untouched.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

from ..backends.base import Backend
from ..backends.torch import TorchBackend
from .hooks import hooked
from .intervention import ExperimentError, Intervention, edits_for


def torch_backend_of(backend: Backend | object) -> TorchBackend:
    """`backend` when it is a PyTorch one; else the refusal (in both languages) that says to choose torch."""
    if not isinstance(backend, TorchBackend):
        raise ExperimentError(key="experiments.needs_torch", field="backend", backend=getattr(backend.info, "backend", "?"))
    return backend


class IntervenedBackend(TorchBackend):
    """`base`'s model with `intervention` applied to every forward pass made through this backend. Means and the
    steering direction are computed once, here, over `reference_ids` (the prompt)."""

    def __init__(self, base: TorchBackend, intervention: Intervention, codec, reference_ids: list[int]):
        base = torch_backend_of(base)
        # Not TorchBackend.__init__, which loads weights: this backend shares `base`'s model, device and info.
        self.device, self.model, self.info = base.device, base.model, replace(base.info)
        self.intervention = intervention
        self.edits = edits_for(intervention, base.model, codec, reference_ids)

    @contextmanager
    def _applied(self):
        with hooked(self.model, self.edits):
            yield

    def _run_prompts(self, prompts):  # every prompt's forward pass (prefill, prefill_batch, prefill_first) is this
        with self._applied():
            return super()._run_prompts(prompts)

    def step_batch(self, token_ids, cache):
        with self._applied():
            return super().step_batch(token_ids, cache)

    def attention(self, input_ids):
        with self._applied():
            return super().attention(input_ids)

    def hidden_states(self, input_ids):
        with self._applied():
            return super().hidden_states(input_ids)
