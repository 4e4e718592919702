"""PyTorch backend: transformers' GPT2LMHeadModel with its KV cache, fp32 on the CPU and fp16 on CUDA."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import DeviceError, Notice
from ..hooks import capture_input
from ..models import ModelSource, load_torch_model
from ..records import BackendInfo
from .base import Backend


def resolve_torch_device(requested: str = "auto") -> tuple[str, str | None]:
    """Pick the device for `--device {auto,cpu,cuda}`; returns (device, notice shown to the user or None)."""
    if requested not in {"auto", "cpu", "cuda"}:
        raise DeviceError(key="device.unknown", field="device", device=requested)
    if requested == "cpu":
        return "cpu", None
    if torch.cuda.is_available():
        return "cuda:0", None
    if requested == "cuda":
        return "cpu", Notice(key="notice.no_gpu")
    return "cpu", None


class TorchBackend(Backend):
    """Eager PyTorch. `torch.inference_mode` around every call; the cache is transformers' DynamicCache."""

    def __init__(self, source: ModelSource, device: str = "auto"):
        self.device, notice = resolve_torch_device(device)
        on_cuda = self.device.startswith("cuda")
        dtype = torch.float16 if on_cuda else torch.float32
        self.model = load_torch_model(source, dtype=dtype).to(self.device)
        self.info = BackendInfo(
            model=source.name,
            backend="torch",
            variant="fp16" if on_cuda else "fp32",
            provider=self.device,
            context_length=self.model.config.n_positions,
            notice=notice,
        )

    @torch.inference_mode()
    def prefill(self, input_ids: list[int], top_k: int = 1) -> tuple[torch.Tensor, Any]:
        ids = torch.tensor([input_ids], device=self.device)  # (1, T)
        out = self.model(input_ids=ids, use_cache=True)
        return out.logits[0].float().cpu(), out.past_key_values  # (T, V)

    @torch.inference_mode()
    def step(self, token_id: int, cache: Any) -> tuple[torch.Tensor, Any]:
        ids = torch.tensor([[token_id]], device=self.device)  # (1, 1)
        out = self.model(input_ids=ids, past_key_values=cache, use_cache=True)
        return out.logits[0, -1].float().cpu(), out.past_key_values  # (V,)

    @torch.inference_mode()
    def step_batch(self, token_ids: list[int], cache: Any) -> tuple[torch.Tensor, Any]:
        ids = torch.tensor(token_ids, device=self.device)[:, None]  # (N, 1); all rows have the same length: no mask
        out = self.model(input_ids=ids, past_key_values=cache, use_cache=True)
        return out.logits[:, -1].float().cpu(), out.past_key_values  # (N, V)

    def expand(self, cache: Any, count: int) -> Any:
        """The prompt's DynamicCache (1 row) repeated to `count` rows, in place: the cache belongs to this run alone."""
        cache.batch_repeat_interleave(count)
        return cache

    def select(self, cache: Any, rows: list[int]) -> Any:
        cache.batch_select_indices(torch.tensor(rows, device=self.device))
        return cache

    @torch.inference_mode()
    def attention(self, input_ids: list[int]):
        ids = torch.tensor([input_ids], device=self.device)  # (1, T)
        attentions = self.model(input_ids=ids, output_attentions=True).attentions  # L x (1, H, T, T)
        return torch.stack(attentions)[:, 0].float().cpu().numpy()  # (L, H, T, T)

    @torch.inference_mode()
    def hidden_states(self, input_ids: list[int]):
        ids = torch.tensor([input_ids], device=self.device)  # (1, T)
        transformer = self.model.transformer
        with capture_input(transformer.ln_f) as final:  # the last residual, before the final layer norm
            states = transformer(input_ids=ids, output_hidden_states=True).hidden_states  # (L + 1) x (1, T, d), last one normed
        return torch.stack([*states[:-1], final[0]])[:, 0].float().cpu().numpy()  # (L + 1, T, d)
