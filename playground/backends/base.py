"""The one small interface every backend implements: prefill a prompt, then step one token at a time."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any


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

    @abstractmethod
    def prefill(self, input_ids: list[int]) -> tuple[Any, Any]:
        """Run the whole prompt. Returns (logits of shape (T, V), cache)."""

    @abstractmethod
    def step(self, token_id: int, cache: Any) -> tuple[Any, Any]:
        """Feed one token after the cached ones. Returns (logits of shape (V,), new cache)."""

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
