"""Inside one prediction: embedding, residual stream, logit lens, sampling funnel, one block opened, KV cache.

Everything is computed by the backend that made the run (its own forward pass: PyTorch with hooks,
ONNX through the export's analysis graph), on the run's tokens. The logit lens reads each layer's
residual through the model's final layer norm and output head (PyTorch fp32 weights of the same
model, so every backend's layers are read alike); the funnel uses the backend's own logits and
transformers' processors in the decoding loop's order (`build_logits_processors`).
"""

from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from transformers.generation.logits_process import (
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    MinNewTokensLengthLogitsProcessor,
    SuppressTokensLogitsProcessor,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from ..backends.base import Backend
from ..config import GenerationSettings, as_float, as_int
from ..errors import Notice, PlaygroundError
from ..generation import build_logits_processors
from ..hooks import capture_input
from ..records import GenerationResult
from ..text import TokenCodec, hex_bytes, unit_labels
from .attention import MAX_ATTENTION_TOKENS

MAX_INSIDE_TOKENS = MAX_ATTENTION_TOKENS  # the same window as the Attention tab, so their rows agree
LENS_TOP = 5  # tokens shown per logit-lens layer
FUNNEL_TOP = 10  # tokens shown per funnel stage
GRID_CHUNK_ROWS = 64  # residual rows put through the output head at once: 64 x 50,257 floats = 13 MB for GPT-2
STAGE_NAMES = {
    RepetitionPenaltyLogitsProcessor: "repetition_penalty",
    NoRepeatNGramLogitsProcessor: "no_repeat_ngram",
    TemperatureLogitsWarper: "temperature",
    TopKLogitsWarper: "top_k",
    TopPLogitsWarper: "top_p",
    TypicalLogitsWarper: "typical_p",
    MinNewTokensLengthLogitsProcessor: "min_new_tokens",
    SuppressTokensLogitsProcessor: "ignore_eos",
}


class InsideError(PlaygroundError):
    """A position or layer that this run does not have, or a run that cannot be analysed any more."""


# --- the final layer norm and output head ----------------------------------------------------------


class LensHead:
    """The model's final layer norm and output head in fp32 on the CPU: residual (N, d) -> logits (N, V)."""

    def __init__(self, model):
        ln_f = model.transformer.ln_f
        self.weight = ln_f.weight.detach().float().cpu()  # (d,)
        self.bias = ln_f.bias.detach().float().cpu()  # (d,)
        self.eps = ln_f.eps
        self.head = model.lm_head.weight.detach().float().cpu()  # (V, d), tied to the token embedding in GPT-2
        self.wte = model.transformer.wte.weight.detach().float().cpu()  # (V, d)
        self.wpe = model.transformer.wpe.weight.detach().float().cpu()  # (n_positions, d)

    @torch.inference_mode()
    def logits(self, residual: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(residual, dtype=torch.float32)  # (N, d)
        x = torch.nn.functional.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)  # (N, d)
        return x @ self.head.T  # (N, V)


# --- what is computed once per run -------------------------------------------------------------------


@dataclass
class RunTrace:
    """The residual stream of (a window of) a run's tokens, as one backend computed it."""

    hidden: np.ndarray  # (L + 1, T, d): embeddings, then after each block (the last before the final layer norm)
    token_ids: list[int]  # the window's tokens
    first_position: int  # position of the window's first token in the run
    computed_by: str  # e.g. "onnx int8 · CPUExecutionProvider"
    notice: Notice | None = None

    @property
    def n_layers(self) -> int:
        return self.hidden.shape[0] - 1


def window_of(token_ids: list[int], cap: int) -> tuple[int, list[int], Notice | None]:
    """The last `cap` tokens of a run: (first position, tokens, a notice when that cut anything)."""
    if len(token_ids) <= cap:
        return 0, list(token_ids), None
    first = len(token_ids) - cap
    notice = Notice(key="inside.window", tokens=len(token_ids), cap=cap, first=first)
    return first, token_ids[first:], notice


def trace_run(backend: Backend, token_ids: list[int], cap: int = MAX_INSIDE_TOKENS) -> RunTrace:
    """One forward pass over the run's final sequence (its last `cap` tokens at most), all layers' residuals."""
    first, window, notice = window_of(token_ids, cap)
    hidden = np.asarray(backend.hidden_states(window), dtype=np.float32)  # (L + 1, T, d)
    info = backend.info
    return RunTrace(hidden, window, first, f"{info.backend} {info.variant} · {info.provider}", notice)


def run_logits(backend: Backend, token_ids: list[int], prompt_length: int) -> tuple[torch.Tensor, Any]:
    """The backend's logits (T, V) at every position of `token_ids` as a run computed them, and the cache after them:
    its first `prompt_length` positions in one pass, each later one by a decoding step. A quantized ONNX export runs
    prompts and steps with different graphs (onnx/prompt.py), whose numbers differ in the fourth digit: so the funnel
    of a generated token shows the probabilities its run drew from."""
    prompt_length = min(max(1, prompt_length), len(token_ids))
    logits, cache = backend.prefill(token_ids[:prompt_length])  # (P, V)
    rows = [logits.float()]
    for token in token_ids[prompt_length:]:
        step, cache = backend.step(token, cache)  # (V,): a view of the backend's output buffer, copied
        rows.append(step.float().clone()[None])
    return torch.cat(rows), cache


def local_index(trace: RunTrace, position: Any, run_length: int) -> int:
    """The window index of run position `position`, which must have a prediction (a token before it) in the window."""
    position = as_int("position", position)
    if not 0 <= position < run_length:
        raise InsideError(key="inside.position_range", position=position, last=run_length - 1, tokens=run_length)
    if position == 0:
        raise InsideError(key="inside.position_zero")
    q = position - trace.first_position
    if q < 1:
        raise InsideError(key="inside.position_window", position=position,
                          first=trace.first_position + 1, last=run_length - 1)
    return q


# --- logit lens -------------------------------------------------------------------------------------------


def layer_name(i: int) -> str:
    return "embeddings" if i == 0 else f"block {i - 1}"


def logit_lens(trace: RunTrace, head: LensHead, q: int, codec: TokenCodec, k: int = LENS_TOP) -> list[dict]:
    """Per layer (embeddings first): what the model would predict at window index `q` if it stopped there."""
    chosen = trace.token_ids[q]
    previous = trace.token_ids[q - 1]
    logprobs = torch.log_softmax(head.logits(trace.hidden[:, q - 1]), dim=-1)  # (L + 1, V)
    top_lp, top_ids = logprobs.topk(k, dim=-1)  # (L + 1, k)
    rows = []
    for i in range(logprobs.shape[0]):
        chosen_lp = logprobs[i, chosen]
        rows.append({
            "layer": i,
            "name": layer_name(i),
            "chosen_prob": math.exp(float(chosen_lp)),
            "chosen_rank": int((logprobs[i] > chosen_lp).sum()) + 1,
            "top": [{"token_id": int(t), "text": codec.label(int(t), previous), "prob": math.exp(float(p))}
                    for t, p in zip(top_ids[i], top_lp[i])],
        })
    return rows


@dataclass
class LensGrid:
    """The logit lens over every position of a window: layer x predicted position, top-k per cell."""

    chosen_prob: np.ndarray  # (L + 1, T - 1): probability of the token the run has at window index 1 .. T-1
    chosen_rank: np.ndarray  # (L + 1, T - 1)
    top_ids: np.ndarray  # (L + 1, T - 1, k)
    top_probs: np.ndarray  # (L + 1, T - 1, k)
    first_position: int  # run position of the window's first token; column j predicts position first + j + 1


@torch.inference_mode()
def lens_grid(trace: RunTrace, head: LensHead, k: int = 1, chunk_rows: int = GRID_CHUNK_ROWS) -> LensGrid:
    """All layers x positions, `chunk_rows` residuals through the output head at a time, keeping the top-k per
    row: never layers x tokens x vocabulary floats at once (peak: chunk_rows x V)."""
    layers, t, d = trace.hidden.shape
    rows = torch.from_numpy(trace.hidden[:, :-1].reshape(-1, d))  # ((L + 1) * (T - 1), d): row r predicts window index r % (T-1) + 1
    chosen = torch.tensor(trace.token_ids[1:]).repeat(layers)  # ((L + 1) * (T - 1),)
    n = rows.shape[0]
    probs, ranks = torch.empty(n), torch.empty(n, dtype=torch.long)
    top_p, top_i = torch.empty(n, k), torch.empty(n, k, dtype=torch.long)
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        logprobs = torch.log_softmax(head.logits(rows[start:stop]), dim=-1)  # (c, V)
        chosen_lp = logprobs.gather(1, chosen[start:stop, None])  # (c, 1)
        probs[start:stop] = chosen_lp[:, 0].exp()
        ranks[start:stop] = (logprobs > chosen_lp).sum(-1) + 1
        values, ids = logprobs.topk(k, dim=-1)  # (c, k)
        top_p[start:stop], top_i[start:stop] = values.exp(), ids
    shape = (layers, t - 1)
    return LensGrid(probs.view(shape).numpy(), ranks.view(shape).numpy(), top_i.view(*shape, k).numpy(),
                    top_p.view(*shape, k).numpy(), trace.first_position)


# --- embedding and residual stream ---------------------------------------------------------------------


def embedding(trace: RunTrace, head: LensHead, q: int, codec: TokenCodec, dims: int = 16) -> dict:
    """The token read last for the prediction at `q` (window index q - 1), its token and position embeddings and their sum.

    The sum is the backend's own layer-0 residual; the two parts are the model's fp32 weights.
    """
    token_id = trace.token_ids[q - 1]
    previous = trace.token_ids[q - 2] if q >= 2 else None
    wte, wpe = head.wte[token_id], head.wpe[q - 1]  # (d,), (d,)
    total = trace.hidden[0, q - 1]  # (d,)
    return {
        "token_id": token_id,
        "text": codec.label(token_id, previous),
        "bytes": hex_bytes(codec.piece(token_id, previous)),
        "position_index": q - 1,  # the row of the position embedding (the window's own numbering)
        "wte_norm": float(wte.norm()), "wpe_norm": float(wpe.norm()), "sum_norm": float(np.linalg.norm(total)),
        "wte_first": wte[:dims].tolist(), "wpe_first": wpe[:dims].tolist(), "sum_first": total[:dims].tolist(),
    }


def residual_stream(trace: RunTrace, q: int, parts: dict | None = None) -> list[dict]:
    """Per layer at the predicting position: the residual's norm, what was added to it, and its cosine with the previous layer.

    `parts` (PyTorch only, from `open_block`) splits each block's addition into attention and MLP outputs.
    """
    h = trace.hidden[:, q - 1].astype(np.float64)  # (L + 1, d)
    norms = np.linalg.norm(h, axis=-1)  # (L + 1,)
    rows = []
    for i in range(h.shape[0]):
        row = {"layer": i, "name": layer_name(i), "norm": float(norms[i]), "added_norm": None, "cosine_previous": None,
               "attention_norm": None, "mlp_norm": None}
        if i > 0:
            row["added_norm"] = float(np.linalg.norm(h[i] - h[i - 1]))
            row["cosine_previous"] = float(h[i] @ h[i - 1] / max(norms[i] * norms[i - 1], 1e-30))
            if parts is not None:
                row["attention_norm"] = float(parts["attention_norms"][i - 1])
                row["mlp_norm"] = float(parts["mlp_norms"][i - 1])
        rows.append(row)
    return rows


# --- one block opened (PyTorch hooks) ---------------------------------------------------------------------


@contextmanager
def _capture_outputs(modules: dict[str, torch.nn.Module]):
    """Collect the outputs of `modules` for forward passes made on this thread (the model is shared between threads)."""
    thread, seen, handles = threading.get_ident(), {}, []
    for name, module in modules.items():
        def hook(_module, _args, output, name=name):
            if threading.get_ident() == thread:
                seen[name] = output[0] if isinstance(output, tuple) else output
        handles.append(module.register_forward_hook(hook))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


@torch.inference_mode()
def torch_pass(model, token_ids: list[int]) -> tuple[np.ndarray, torch.Tensor, Any, dict]:
    """The model's own forward over `token_ids`, once, with hooks: the residual stream (L + 1, T, d) (the last before
    the final layer norm), the logits (T, V), the KV cache, and each block's insides (see `open_block`)."""
    blocks = model.transformer.h
    modules = {}
    for i, block in enumerate(blocks):
        modules |= {f"attn{i}": block.attn, f"mlp{i}": block.mlp, f"qkv{i}": block.attn.c_attn, f"gelu{i}": block.mlp.act}
    device = next(model.parameters()).device
    with capture_input(model.transformer.ln_f) as final, _capture_outputs(modules) as seen:
        out = model(input_ids=torch.tensor([token_ids], device=device), use_cache=True, output_hidden_states=True)
    hidden = torch.stack([*out.hidden_states[:-1], final[0]])[:, 0].float().cpu().numpy()  # (L + 1, T, d)
    internals = {
        "qkv": torch.stack([seen[f"qkv{i}"][0] for i in range(len(blocks))]).float().cpu(),  # (L, T, 3d)
        "gelu": torch.stack([seen[f"gelu{i}"][0] for i in range(len(blocks))]).float().cpu(),  # (L, T, 4d)
        "attention_norms": torch.stack([seen[f"attn{i}"][0].float().norm(dim=-1) for i in range(len(blocks))]).cpu(),  # (L, T)
        "mlp_norms": torch.stack([seen[f"mlp{i}"][0].float().norm(dim=-1) for i in range(len(blocks))]).cpu(),  # (L, T)
    }
    return hidden, out.logits[0].float().cpu(), out.past_key_values, internals


def open_block(internals: dict, config, q: int, layer: int, head: int) -> dict:
    """Layer `layer`, head `head` at the query window index q - 1, from what `torch_pass` caught: scaled scores
    Q·Kᵀ/√d_head over every key, the causal mask, the softmax (the Attention tab's row), the weighted values;
    the MLP activations after GELU; and every block's attention and MLP output norms at that token."""
    query = q - 1
    d, heads = config.n_embd, config.n_head
    head_dim = d // heads
    qkv = internals["qkv"][layer]  # (T, 3d): the c_attn projection, before the heads are split
    qs, ks, vs = (x.view(-1, heads, head_dim)[:, head] for x in qkv.split(d, dim=-1))  # each (T, head_dim)
    scale = math.sqrt(head_dim) if config.scale_attn_weights else 1.0
    if config.scale_attn_by_inverse_layer_idx:
        scale *= layer + 1
    scores = ks @ qs[query] / scale  # (T,): query · every key
    masked = torch.where(torch.arange(qkv.shape[0]) <= query, scores, torch.tensor(float("-inf")))  # causal: no later keys
    weights = torch.softmax(masked, dim=-1)  # (T,)
    weighted = weights[:, None] * vs  # (T, head_dim): what each key contributes to the head's output
    gelu = internals["gelu"][layer, query]  # (4d,)
    order = gelu.abs().argsort(descending=True)[:10]
    return {
        "layer": layer, "head": head, "query_index": query,
        "scores": scores.tolist(),
        "mask": [k <= query for k in range(qkv.shape[0])],
        "weights": weights.tolist(),
        "weighted_value_norms": weighted.norm(dim=-1).tolist(),
        "output_norm": float(weighted.sum(0).norm()),
        "mlp_activations": gelu.tolist(),
        "mlp_top": [{"neuron": int(i), "activation": float(gelu[i])} for i in order],
        "attention_norms": internals["attention_norms"][:, query].tolist(),
        "mlp_norms": internals["mlp_norms"][:, query].tolist(),
    }


# --- sampling funnel -------------------------------------------------------------------------------------------


def funnel_settings(settings: GenerationSettings, temperature: Any = None, top_k: Any = None, top_p: Any = None) -> GenerationSettings:
    """The run's settings with other temperature / top-k / top-p (given ones switch sampling on); checked like a run's."""
    changes: dict[str, Any] = {}
    if temperature is not None and temperature != "":
        changes["temperature"] = as_float("temperature", temperature)
    if top_k is not None and top_k != "":
        changes["top_k"] = as_int("top_k", top_k)
    if top_p is not None and top_p != "":
        changes["top_p"] = as_float("top_p", top_p)
    if changes and any(changes[name] != getattr(settings, name) for name in changes):
        changes["do_sample"] = True
    return replace(settings, **changes).validate()


@torch.inference_mode()
def funnel(logits: torch.Tensor, input_ids: list[int], settings: GenerationSettings, chosen_id: int,
           eos_ids=frozenset(), prompt_length: int = 0) -> list[dict]:
    """The decoding loop's processors one at a time on the logits (V,) that predicted `chosen_id` after `input_ids`
    (of which the first `prompt_length` are the prompt, for `min_new_tokens`; `eos_ids`: the model's end of text).

    Each stage: how many tokens still have a probability, the chosen token's probability in the
    renormalised distribution, and the top tokens. The last stage is what the loop sampled from (or
    took the argmax of), so with the run's settings its `chosen_prob` is the recorded `prob`.
    """
    ids = torch.tensor([input_ids])  # (1, n): what the penalties look at
    scores = logits.float()[None].clone()  # (1, V)

    def stage(name: str) -> dict:
        probs = torch.softmax(scores[0], dim=-1)  # (V,)
        survivors = int(torch.isfinite(scores[0]).sum())  # the cut ones are -inf, probability exactly 0
        # The top tokens among the survivors only: after top-k 3 there are 3, never zero-probability filler. (Ranked by
        # score, where -inf sorts last; a survivor's probability can underflow to 0 and tie with the cut ones.)
        top_ids = scores[0].topk(min(FUNNEL_TOP, survivors)).indices
        return {"name": name, "survivors": survivors, "chosen_prob": float(probs[chosen_id]),
                "top": [{"token_id": int(i), "prob": float(probs[i])} for i in top_ids]}

    stages = [stage("logits")]
    for processor in build_logits_processors(settings, eos_ids, prompt_length):
        scores = processor(ids, scores)
        stages.append(stage(STAGE_NAMES.get(type(processor), type(processor).__name__)))
    final = dict(stages[-1], name="sampled" if settings.do_sample else "greedy")
    return [*stages, final]


# --- KV cache ------------------------------------------------------------------------------------------------


def kv_cache_report(cache: Any, length: int) -> dict:
    """Per layer, the keys' and values' shapes and bytes at the step that had `length` tokens, read off a real cache a
    backend returned (from one pass over the run: at that step it held the first `length` positions of it)."""

    def measured(x) -> tuple[list[int], int]:
        if isinstance(x, torch.Tensor):
            shape, width = list(x.shape), x.element_size()
        elif isinstance(x, np.ndarray):
            shape, width = list(x.shape), x.itemsize
        else:  # the in-place cache's CpuBuffer, or an OrtValue kept on the GPU (int8: the quantized variants' cache)
            shape, width = list(x.shape()), {"tensor(float16)": 2, "tensor(int8)": 1}.get(x.data_type(), 4)
        shape[-2] = length  # (batch, heads, positions, head_dim)
        return shape, int(np.prod(shape)) * width

    if hasattr(cache, "layers"):  # transformers' DynamicCache (PyTorch backend)
        pairs = [(layer.keys, layer.values) for layer in cache.layers]
    else:  # the ONNX backend's OnnxCache: present arrays or OrtValues, key and value per layer
        present = cache.past
        pairs = list(zip(present[0::2], present[1::2]))
    layers = []
    for i, (key, value) in enumerate(pairs):
        (key_shape, key_bytes), (value_shape, value_bytes) = measured(key), measured(value)
        layers.append({"layer": i, "key_shape": key_shape, "value_shape": value_shape, "bytes": key_bytes + value_bytes})
    return {"layers": layers, "total_bytes": sum(layer["bytes"] for layer in layers)}


# --- quantization error ------------------------------------------------------------------------------------------


def quantization_error(hidden: np.ndarray, reference: np.ndarray, head: LensHead) -> list[dict]:
    """Per layer, a variant's residual (L + 1, T, d) against PyTorch fp32's on the same tokens: relative error
    (Frobenius norm over positions) and how often the logit lens's top-1 still agrees."""
    rows = []
    for i in range(hidden.shape[0]):
        diff = float(np.linalg.norm(hidden[i] - reference[i]) / max(np.linalg.norm(reference[i]), 1e-30))
        agree = (head.logits(hidden[i]).argmax(-1) == head.logits(reference[i]).argmax(-1)).float().mean()
        rows.append({"layer": i, "name": layer_name(i), "relative_error": diff, "top1_agreement": float(agree)})
    return rows


# --- the whole view of one position ---------------------------------------------------------------------------


@dataclass
class Inside:
    """One run opened for analysis: its residual stream computed once, per position the backend's logits and cache."""

    result: GenerationResult
    backend: Backend
    reference: Any  # a PyTorch GPT2LMHeadModel of the same weights (the backend's own model on the torch backend)
    codec: TokenCodec
    cap: int = MAX_INSIDE_TOKENS
    trace: RunTrace = field(init=False)
    head: LensHead = field(init=False)
    notices: list = field(default_factory=list, init=False)  # about the run as a whole (window, fingerprint)
    _logits: torch.Tensor = field(init=False, repr=False)  # (T, V): the backend's own logits at every window position
    _cache: Any = field(init=False, repr=False)  # the backend's KV cache after the window
    _internals: dict | None = field(default=None, init=False, repr=False)  # PyTorch only: see torch_pass
    _labels: list | None = field(default=None, init=False, repr=False)
    _grid: LensGrid | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        ids = [t.token_id for t in self.result.prompt_tokens + self.result.tokens]
        if len(ids) < 2:
            raise InsideError(key="inside.too_short")
        info = self.backend.info
        if self.on_torch:  # one pass of the model's own forward gives everything
            first, window, notice = window_of(ids, self.cap)
            hidden, self._logits, self._cache, self._internals = torch_pass(self.backend.model, window)
            self.trace = RunTrace(hidden, window, first, f"{info.backend} {info.variant} · {info.provider}", notice)
        else:  # the export's analysis graph for the residual stream, the decoder for the logits and the cache
            self.trace = trace_run(self.backend, ids, self.cap)
            prompt_length = len(self.result.prompt_tokens) - self.trace.first_position  # the window's prompt positions
            self._logits, self._cache = run_logits(self.backend, self.trace.token_ids, prompt_length)
        self.head = LensHead(self.reference)
        if self.trace.notice:
            self.notices.append(self.trace.notice)

    @property
    def run_length(self) -> int:
        return len(self.result.prompt_tokens) + len(self.result.tokens)

    @property
    def on_torch(self) -> bool:
        return self.backend.info.backend == "torch"

    def record(self, position: int):
        records = self.result.prompt_tokens + self.result.tokens
        return records[position]

    def index(self, position: Any) -> int:
        return local_index(self.trace, position, self.run_length)

    def logits_at(self, q: int) -> tuple[torch.Tensor, dict]:
        """The backend's own logits (V,) for the prediction at window index q, and its KV cache at that step.

        Both come from the one pass over the window: with the causal mask, row q - 1 is what a pass over the
        first q tokens gives, so sliders and other positions need no new forward pass.
        """
        return self._logits[q - 1], kv_cache_report(self._cache, q)

    def funnel(self, position: Any, temperature: Any = None, top_k: Any = None, top_p: Any = None) -> list[dict]:
        q = self.index(position)
        settings = funnel_settings(self.result.settings, temperature, top_k, top_p)
        logits, _ = self.logits_at(q)
        # The prompt's tokens in the window (a window that starts after the prompt counts from its start).
        prompt_length = max(0, len(self.result.prompt_tokens) - self.trace.first_position)
        return funnel(logits, self.trace.token_ids[:q], settings, self.trace.token_ids[q], self.codec.eos_ids, prompt_length)

    def block(self, position: Any, layer: Any = 0, head: Any = 0) -> dict:
        q = self.index(position)
        layer, head = as_int("layer", layer), as_int("head", head)
        config = self.reference.config
        if not 0 <= layer < config.n_layer:
            raise InsideError(key="inside.layer_range", layer=layer, last=config.n_layer - 1)
        if not 0 <= head < config.n_head:
            raise InsideError(key="inside.head_range", head=head, last=config.n_head - 1)
        if self._internals is not None:
            return open_block(self._internals, config, q, layer, head) | {"computed_by": self.trace.computed_by}
        # Another backend: its own attention row; the scores, values and MLP need PyTorch's hooks.
        row = np.asarray(self.backend.attention(self.trace.token_ids))[layer, head, q - 1]  # (T,)
        return {"layer": layer, "head": head, "query_index": q - 1, "weights": row.tolist(),
                "mask": [k <= q - 1 for k in range(len(self.trace.token_ids))], "scores": None, "weighted_value_norms": None,
                "output_norm": None, "mlp_activations": None, "mlp_top": None, "attention_norms": None, "mlp_norms": None,
                "computed_by": self.trace.computed_by}

    @property
    def labels(self) -> list[str]:
        """Per window token: its character(s), with (i/n) for the n tokens of one character; escape before markup."""
        if self._labels is None:
            ids, first = self.trace.token_ids, self.trace.first_position
            previous = self.result.prompt_tokens[first - 1].token_id if 0 < first <= len(self.result.prompt_tokens) else None
            names = unit_labels(self.codec.pieces(ids, previous))
            self._labels = [self.codec.label(i) if self.codec.is_silent(i) else name for i, name in zip(ids, names)]
        return self._labels

    def grid(self) -> LensGrid:
        """The logit lens over the whole window (top-1 per cell), computed once."""
        if self._grid is None:
            self._grid = lens_grid(self.trace, self.head, k=1)
        return self._grid

    def quantization(self, reference_backend: Backend) -> list[dict]:
        """This run's residual stream against `reference_backend`'s (PyTorch fp32) on the same tokens, layer by layer."""
        reference = trace_run(reference_backend, self.trace.token_ids, cap=len(self.trace.token_ids)).hidden
        return quantization_error(self.trace.hidden, reference, self.head)

    def attribution(self, position: Any) -> dict:
        """Gradient x input and integrated gradients for the prediction at `position` (PyTorch backend only)."""
        q = self.index(position)
        if not self.on_torch:
            info = self.backend.info
            raise InsideError(key="inside.attribution_torch", backend=f"{info.backend} {info.variant}")
        from .attribution import attribute

        ids = self.trace.token_ids
        return attribute(self.backend.model, ids[:q], ids[q]) | {
            "positions": list(range(self.trace.first_position, self.trace.first_position + q))}

    def position_notices(self, position: Any) -> list[Notice]:
        """What to know about the numbers at one position (beside the run's own notices)."""
        record = self.record(self.trace.first_position + self.index(position))
        notices = []
        if record.is_prompt:
            notices.append(Notice(key="inside.prompt_token"))
        return notices

    def report(self, position: Any, layer: Any = 0, head: Any = 0, temperature: Any = None, top_k: Any = None,
               top_p: Any = None) -> dict:
        """Everything for one position, as JSON (the API's answer and what the tab draws)."""
        q = self.index(position)
        position = self.trace.first_position + q
        record = self.record(position)
        info = self.backend.info
        block = self.block(position, layer, head)
        funnel_stages = self.funnel(position, temperature, top_k, top_p)
        _, kv = self.logits_at(q)
        notices = [*self.notices, *self.position_notices(position)]
        return {
            "run_id": self.result.run_id,
            "position": position,
            "token": {"token_id": record.token_id, "text": record.text, "is_prompt": record.is_prompt,
                      "raw_prob": record.raw_prob, "prob": record.prob, "rank": record.rank},
            "model": info.model, "backend": info.backend, "variant": info.variant, "provider": info.provider,
            "computed_by": self.trace.computed_by,
            "window": {"first_position": self.trace.first_position, "tokens": len(self.trace.token_ids)},
            "notices": [str(n) for n in notices],
            "embedding": embedding(self.trace, self.head, q, self.codec),
            "residual": residual_stream(self.trace, q, block if self.on_torch else None),
            "logit_lens": logit_lens(self.trace, self.head, q, self.codec),
            "funnel": funnel_stages,
            "block": block,
            "kv_cache": kv,
        }


def check_fingerprint(stored: str | None, current: str | None, model: str) -> Notice | None:
    """Refuse a run whose model's weights changed since it was made; a notice when the run predates fingerprints."""
    if stored is None:
        return Notice(key="inside.no_fingerprint", model=model)
    if current is not None and stored != current:
        raise InsideError(key="inside.model_changed", model=model)
    return None
