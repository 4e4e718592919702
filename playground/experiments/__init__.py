"""Experiments on the model (PyTorch backend): knock out heads, neurons and sublayers, scan every head, patch
activations from a clean prompt into a corrupted one, steer generation with a direction; all through the model's own
forward with hooks (hooks.py), an intervened generation through the one decoding loop (backend.py)."""

from .ablation import HeadScan, head_scan, measure, rescore
from .backend import IntervenedBackend, torch_backend_of
from .intervention import ExperimentError, Intervention, edits_for
from .patching import PATCH_KINDS, PatchGrid, patch, patched_logits
from .presets import PATCH_PRESETS, STEER_PRESETS, induction_prompts
from .steering import steered_pair
from .target import Target, encode_prompt, token_of

__all__ = ["ExperimentError", "HeadScan", "IntervenedBackend", "Intervention", "PATCH_KINDS", "PATCH_PRESETS", "PatchGrid",
           "STEER_PRESETS", "Target", "edits_for", "encode_prompt", "head_scan", "induction_prompts", "measure", "patch",
           "patched_logits", "rescore", "steered_pair", "token_of", "torch_backend_of"]
