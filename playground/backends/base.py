"""The one small interface every backend implements: prefill a prompt, then step one token (or a batch of N) at a time."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from ..errors import PlaygroundError


class BatchUnsupported(PlaygroundError):
    """A backend that decodes one sequence at a time was asked for several samples at once."""

    def __init__(self, info: "BackendInfo"):
        super().__init__(f"The {info.backend} backend decodes one sample at a time: ask for 1 sample, or use torch or onnx.",
                         key="batch.unsupported", backend=info.backend)


@dataclass(frozen=True)
class BackendInfo:
    """What ran a generation, shown beside each output and stored with each run."""

    model: str  # display name of the model, e.g. "gpt2" or "demo-gpt2"
    backend: str  # "torch" or "onnx"
    variant: str  # "fp32", "fp16", "int8", "int4"
    provider: str  # where it really runs: "cpu", "cuda:0", "CPUExecutionProvider", ...
    context_length: int
    notice: str | None = None  # e.g. "CUDA requested but not available: running on the CPU"

    def label(self) -> str:
        return f"{self.model} · {self.backend} {self.variant} · {self.provider}"


class Backend(ABC):
    """A GPT-2 forward pass with a key/value cache. Nothing outside `backends/` knows which one it is.

    Logits come back as float32 `torch.Tensor`s on the CPU, whatever device computed them: the
    decoding loop samples on the CPU with one seeded generator, so a seed means the same thing on
    every backend.
    """

    info: BackendInfo
    # False for backends whose forward pass is not torch (ONNX Runtime): the decoding loop then keeps
    # its own small torch ops on one thread, so torch's OpenMP workers do not spin on the cores that
    # the backend's thread pool needs (measured: that contention halved ONNX decode speed).
    computes_with_torch: bool = True
    # True for a backend that decodes by itself (a serving engine, backends/remote.py): the decoding loop then
    # takes whole tokens with their log-probabilities from `stream_tokens(prompt_ids, settings, stop_event)`
    # instead of logits, and leaves what the engine does not report empty (None), never estimated.
    streams_tokens: bool = False

    @abstractmethod
    def prefill(self, input_ids: list[int], top_k: int = 1) -> tuple[Any, Any]:
        """Run the whole prompt. Returns (logits of shape (T, V), cache). `top_k`: how many alternatives per position
        `statistics` should hold, for a backend that computes them."""

    def statistics(self, cache: Any) -> tuple[Any, ...] | None:
        """The per-position statistics computed together with the latest logits on `cache`, as numpy arrays: top-k
        logits (N, T, k) largest first (lower id first on ties), their ids (N, T, k), log-sum-exp (N, T) and mean
        logit under the distribution (N, T). None (the default): the decoding loop computes them from the logits."""
        return None

    @abstractmethod
    def step(self, token_id: int, cache: Any) -> tuple[Any, Any]:
        """Feed one token after the cached ones. Returns (logits of shape (V,), new cache)."""

    # Batches: N continuations of one prompt. The prompt is prefilled once (batch 1), its cache copied to
    # N rows with `expand`, then all rows step together; `select` keeps only some rows (finished samples
    # are dropped, so they stop costing work). A backend that cannot batch keeps these defaults: batch 1
    # still works through `step`, and a larger batch is refused with a message.

    def step_batch(self, token_ids: list[int], cache: Any) -> tuple[Any, Any]:
        """Feed one token per row after the cached ones. Returns (logits of shape (N, V), new cache)."""
        if len(token_ids) != 1:
            raise BatchUnsupported(self.info)
        logits, cache = self.step(token_ids[0], cache)
        return logits[None], cache  # (1, V)

    def expand(self, cache: Any, count: int) -> Any:
        """The prefilled cache of one prompt (batch 1) repeated to `count` rows."""
        if count != 1:
            raise BatchUnsupported(self.info)
        return cache

    def select(self, cache: Any, rows: list[int]) -> Any:
        """A batch cache with only `rows` kept, in that order."""
        if rows != [0]:
            raise BatchUnsupported(self.info)
        return cache

    @abstractmethod
    def attention(self, input_ids: list[int]) -> Any:
        """Attention probabilities of a whole sequence, computed by this backend: numpy (layers, heads, T, T)."""

    def hidden_states(self, input_ids: list[int]) -> Any:
        """The residual stream of a whole sequence, computed by this backend: numpy float32 (layers + 1, T, d).

        Entry 0 is the input embedding (token + position), entry i the residual after block i; the last
        one is taken before the final layer norm (unlike transformers' `hidden_states`, whose last entry
        has it applied), so every entry can go through the same final layer norm and output head.
        """
        from ..errors import PlaygroundError

        raise PlaygroundError(f"The {self.info.backend} backend cannot show hidden states; use the torch or onnx backend.",
                              key="inside.no_hidden_states", backend=self.info.backend)
