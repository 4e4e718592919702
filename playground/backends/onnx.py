"""ONNX Runtime backend: drives the exported decoder directly (no optimum `generate`), CUDA with CPU fallback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DeviceError, Notice
from ..onnx.export import ATTENTION_FILE, check_variant_runs_on, ensure_export
from ..onnx.runtime import CPU, CUDA, AttentionRunner, OnnxRunner, cuda_provider_available
from ..models import ModelSource
from ..records import BackendInfo
from .base import Backend

def resolve_onnx_device(requested: str = "auto") -> tuple[str, str | None]:
    """`--device` for ONNX: CUDA when asked for (or auto) and listed; else CPU, with a note when CUDA was asked for."""
    if requested not in {"auto", "cpu", "cuda"}:
        raise DeviceError(key="device.unknown", field="device", device=requested)
    if requested == "cpu":
        return "cpu", None
    gpu = torch.cuda.is_available() and cuda_provider_available()
    if gpu:
        return "cuda", None
    if requested == "cuda":
        return "cpu", Notice(key="notice.no_gpu_onnx")
    return "cpu", None


class OnnxBackend(Backend):
    """A verified export of the model, run by onnxruntime; the session is created once and shared."""

    computes_with_torch = False

    def __init__(self, source: ModelSource, variant: str = "fp32", device: str = "auto", exports_root: Path | None = None,
                 progress: bool = True, threads: int | None = None):
        device, notice = resolve_onnx_device(device)
        if device == "cuda" and variant == "int8":
            notice = Notice(key="notice.int8_cpu")
            device = "cpu"
        check_variant_runs_on(variant, device)
        self.model_path, self.manifest = ensure_export(source, variant, exports_root, progress=progress)
        providers = [CUDA, CPU] if device == "cuda" else [CPU]
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(source.location)
        self.runner = OnnxRunner(self.model_path, providers, threads=threads, context=config.n_positions)
        self._attention_args = (self.model_path.parent / ATTENTION_FILE, providers, threads)
        self._attention_runner: AttentionRunner | None = None
        if device == "cuda" and self.runner.provider != CUDA:
            # onnxruntime-gpu may list CUDA yet silently fall back: say so, and refuse GPU-only variants.
            notice = Notice(key="notice.cuda_failed", provider=self.runner.provider)
            check_variant_runs_on(variant, "cpu")
        if notice is None and self.runner.prompt_off == "int8_gemm":  # onnx/prompt.py: int8_gemm_is_exact
            notice = Notice(key="notice.int8_gemm_inexact")
        self.info = BackendInfo(
            model=source.name,
            backend="onnx",
            variant=variant,
            provider=self.runner.provider,
            context_length=config.n_positions,
            notice=notice,
        )

    def prefill(self, input_ids: list[int], top_k: int = 1) -> tuple[torch.Tensor, Any]:
        return self.runner.prefill(input_ids, top_k)

    def prefill_batch(self, prompts: list[list[int]], top_k: int = 1) -> tuple[torch.Tensor, Any]:
        return self.runner.prefill_batch(prompts, top_k)

    def prefill_first(self, prompts: list[list[int]], top_k: int = 1):
        if not self.runner.has_first:  # an export without `logits_from` (fp16, see onnx/head.py): all at once
            return super().prefill_first(prompts, top_k)
        return self.runner.prefill_first(prompts, top_k)

    def score_rest(self, rest: Any):
        if not self.runner.has_first:
            return super().score_rest(rest)
        return self.runner.score_rest(rest)

    @property
    def gives_hidden(self) -> bool:
        return self.runner.has_first  # exports since format 10 output lm_head's input (fp16 keeps optimum's graph)

    def last_hidden(self, cache: Any) -> np.ndarray | None:
        return self.runner.last_hidden(cache)

    def statistics(self, cache: Any) -> tuple[np.ndarray, ...] | None:
        return self.runner.statistics(cache)  # exports since format 8 compute them in the graph (onnx/stats.py)

    def step(self, token_id: int, cache: Any) -> tuple[torch.Tensor, Any]:
        return self.runner.step(token_id, cache)

    def step_batch(self, token_ids: list[int], cache: Any) -> tuple[torch.Tensor, Any]:
        return self.runner.step_batch(token_ids, cache)

    def expand(self, cache: Any, count: int) -> Any:
        return self.runner.expand(cache, count)

    def select(self, cache: Any, rows: list[int]) -> Any:
        return self.runner.select(cache, rows)

    def join(self, batch: Any | None, cache: Any, rows: list[int]) -> Any:
        return self.runner.join(batch, cache, rows)

    def release(self, cache: Any) -> None:
        self.runner.release(cache)

    def _analysis(self) -> AttentionRunner:
        if self._attention_runner is None:  # created on first use: most runs never open the attention view
            self._attention_runner = AttentionRunner(*self._attention_args)
        return self._attention_runner

    def attention(self, input_ids: list[int]) -> np.ndarray:
        return self._analysis().attention(input_ids)

    def hidden_states(self, input_ids: list[int]) -> np.ndarray:
        return self._analysis().hidden_states(input_ids)
