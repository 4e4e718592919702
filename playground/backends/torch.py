"""PyTorch backend: transformers' GPT2LMHeadModel with its KV cache, fp32 on the CPU and fp16 on CUDA."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
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


class TorchCache(NamedTuple):
    """transformers' DynamicCache of a batch of rows, the positions each holds (`length`, the same for all) and how
    many of a row's first positions are padding (`pads`, (N,) int64; None: none). See onnx/runtime.py's OnnxCache."""

    kv: Any
    length: int
    pads: np.ndarray | None = None
    hidden: Any = None  # lm_head's input at the positions of the run that made this cache (N, T, E), a tensor


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

    def prefill(self, input_ids: list[int], top_k: int = 1) -> tuple[torch.Tensor, TorchCache]:
        logits, cache = self.prefill_batch([input_ids], top_k)
        return logits[0], cache  # (T, V)

    @torch.inference_mode()
    def prefill_batch(self, prompts: list[list[int]], top_k: int = 1) -> tuple[torch.Tensor, TorchCache]:
        hidden, cache = self._run_prompts(prompts)
        return self.model.lm_head(hidden).float().cpu(), cache  # (N, T, V)

    @torch.inference_mode()
    def prefill_first(self, prompts: list[list[int]], top_k: int = 1):
        """lm_head over each prompt's last position only (as transformers' generate does: `logits_to_keep=1`); the
        others' logits come from `score_rest`."""
        hidden, cache = self._run_prompts(prompts)
        return self.model.lm_head(hidden[:, -1:]).float().cpu(), None, cache, hidden[:, :-1]  # (N, 1, V), ..., (N, T - 1, E)

    @torch.inference_mode()
    def score_rest(self, rest: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.model.lm_head(rest).float().cpu(), None  # (N, T - 1, V)

    @torch.inference_mode()
    def _run_prompts(self, prompts: list[list[int]]) -> tuple[torch.Tensor, TorchCache]:
        """lm_head's input (N, T, E) at every position of the prompts and their cache: one prompt as it is, several as
        one batch, each padded on the left to the longest (masked; positions counted from each prompt's first token).
        The padded positions of the cache are set to zero: a padded query attends to nothing, which SDPA may answer
        with NaN, and a NaN key would spoil every later step's matmul even under the mask."""
        transformer = self.model.transformer  # GPT2LMHeadModel's forward is this, then lm_head
        if len(prompts) == 1:
            out = transformer(input_ids=torch.tensor(prompts, device=self.device), use_cache=True)  # (1, T)
            return out.last_hidden_state, TorchCache(out.past_key_values, len(prompts[0]), hidden=out.last_hidden_state)
        width = max(len(ids) for ids in prompts)
        pads = np.array([width - len(ids) for ids in prompts], dtype=np.int64)
        ids = torch.tensor([[0] * pad + list(p) for pad, p in zip(pads, prompts)], device=self.device)  # (N, T)
        padding = torch.from_numpy(pads).to(self.device)[:, None]  # (N, 1)
        columns = torch.arange(width, device=self.device)[None, :]  # (1, T)
        mask = (columns >= padding).long()  # (N, T)
        out = transformer(input_ids=ids, attention_mask=mask, position_ids=(columns - padding).clamp(min=0), use_cache=True)
        kv = out.past_key_values
        for layer in kv.layers:
            for r, pad in enumerate(pads):
                if pad:
                    layer.keys[r, :, :pad] = 0
                    layer.values[r, :, :pad] = 0
        return out.last_hidden_state, TorchCache(kv, width, pads if pads.any() else None, out.last_hidden_state)

    def step(self, token_id: int, cache: TorchCache) -> tuple[torch.Tensor, TorchCache]:
        logits, cache = self.step_batch([token_id], cache)
        return logits[0], cache  # (V,)

    @torch.inference_mode()
    def step_batch(self, token_ids: list[int], cache: TorchCache) -> tuple[torch.Tensor, TorchCache]:
        kv, length, pads = cache.kv, cache.length, cache.pads
        ids = torch.tensor(token_ids, device=self.device)[:, None]  # (N, 1)
        transformer = self.model.transformer  # GPT2LMHeadModel's forward is this, then lm_head: its input is kept
        if pads is None:  # every row as long as the others: no mask
            out = transformer(input_ids=ids, past_key_values=kv, use_cache=True)
        else:  # rows padded on the left: the padding is masked, and each row counts positions from its first token
            padding = torch.from_numpy(pads).to(self.device)[:, None]  # (N, 1)
            mask = (torch.arange(length + 1, device=self.device)[None, :] >= padding).long()  # (N, length + 1)
            out = transformer(input_ids=ids, past_key_values=kv, attention_mask=mask, position_ids=length - padding,
                              use_cache=True)
        hidden = out.last_hidden_state  # (N, 1, E)
        return (self.model.lm_head(hidden[:, -1]).float().cpu(),  # (N, V)
                TorchCache(out.past_key_values, length + 1, pads, hidden))

    gives_hidden = True

    def last_hidden(self, cache: TorchCache) -> np.ndarray | None:
        return None if cache.hidden is None else cache.hidden.float().cpu().numpy()  # (N, T, E)

    def expand(self, cache: TorchCache, count: int) -> TorchCache:
        """The prompt's DynamicCache (1 row) repeated to `count` rows, in place: the cache belongs to this run alone."""
        cache.kv.batch_repeat_interleave(count)
        return cache

    def select(self, cache: TorchCache, rows: list[int]) -> TorchCache:
        """Keep `rows`; padding that every kept row has is dropped (a view), so the batch is no wider than its longest row."""
        kv, length, pads = cache.kv, cache.length, cache.pads
        kv.batch_select_indices(torch.tensor(rows, device=self.device))
        pads = None if pads is None else pads[np.asarray(rows, dtype=np.int64)]
        drop = int(pads.min()) if pads is not None and len(rows) else 0
        if drop:
            for layer in kv.layers:
                layer.keys, layer.values = layer.keys[:, :, drop:], layer.values[:, :, drop:]  # (N, H, length - drop, D)
            pads, length = pads - drop, length - drop
        return TorchCache(kv, length, pads if pads is not None and pads.any() else None)

    def join(self, batch: TorchCache | None, cache: TorchCache, rows: list[int]) -> TorchCache:
        """`batch` (None: no rows yet) with rows `rows` of a prefilled `cache` appended, in that order. The shorter side
        is padded on the left with zeros (finite: a masked position still enters the attention's matmuls)."""
        count = cache.kv.layers[0].keys.shape[0]
        if list(rows) != list(range(count)):  # a prompt's row once per sample (in place: the cache is this join's alone)
            cache.kv.batch_select_indices(torch.tensor(rows, device=self.device))
        own = cache.pads[np.asarray(rows, dtype=np.int64)] if cache.pads is not None else np.zeros(len(rows), dtype=np.int64)
        cache = TorchCache(cache.kv, cache.length, own if own.any() else None)
        if batch is None:
            return cache
        sides = [batch, cache]
        width = max(side.length for side in sides)
        pads = np.concatenate([(side.pads if side.pads is not None else np.zeros(side.kv.layers[0].keys.shape[0], dtype=np.int64))
                               + (width - side.length) for side in sides])

        def padded(x: torch.Tensor, pad: int) -> torch.Tensor:  # (n, H, T, D) -> (n, H, pad + T, D)
            return torch.nn.functional.pad(x, (0, 0, pad, 0)) if pad else x

        for mine, theirs in zip(batch.kv.layers, cache.kv.layers):
            mine.keys = torch.cat([padded(mine.keys, width - batch.length), padded(theirs.keys, width - cache.length)])
            mine.values = torch.cat([padded(mine.values, width - batch.length), padded(theirs.values, width - cache.length)])
        return TorchCache(batch.kv, width, pads if pads.any() else None)

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
