"""The two things that can run a generation: a `Backend` (a forward pass the decoding loop steps) and an `Engine`
(a serving engine that decodes by itself and streams token records)."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from ..config import GenerationSettings
    from ..records import BackendInfo, TokenRecord


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
    def prefill(self, input_ids: list[int], top_k: int = 1) -> tuple[Any, Any]:
        """Run the whole prompt. Returns (logits of shape (T, V), cache). `top_k`: how many alternatives per position
        `statistics` should hold, for a backend that computes them."""

    def statistics(self, cache: Any) -> tuple[Any, ...] | None:
        """The per-position statistics computed together with the latest logits on `cache`, as numpy arrays: top-k
        logits (N, T, k) largest first (lower id first on ties), their ids (N, T, k), log-sum-exp (N, T) and mean
        logit under the distribution (N, T). None (the default): the decoding loop computes them from the logits."""
        return None

    gives_hidden: bool = False  # whether `last_hidden` gives lm_head's input (contrastive search needs it)

    def last_hidden(self, cache: Any) -> Any:
        """lm_head's input (after the final layer norm) at the positions of the latest run on `cache` (a prefill's or a
        step's), numpy float32 (N, T, E); None where this backend does not give it (`gives_hidden` False)."""
        return None

    @abstractmethod
    def step(self, token_id: int, cache: Any) -> tuple[Any, Any]:
        """Feed one token after the cached ones. Returns (logits of shape (V,), new cache)."""

    # Batches. Every run on a backend decodes in one batch (batching.py's DecodeBatch): the prompts of the runs that
    # join at a step are prefilled together (`prefill_batch`), each prompt's row copied once per sample and appended
    # to the batch with `join`; then all rows step together, and `select` keeps only the rows still running (finished
    # ones stop costing work). Rows of different runs hold different numbers of positions: a backend pads the shorter
    # ones on the left, masks the padding and counts each row's positions from its own first token, so that a row
    # computes what it would alone.

    @abstractmethod
    def step_batch(self, token_ids: list[int], cache: Any) -> tuple[Any, Any]:
        """Feed one token per row after the cached ones. Returns (logits of shape (N, V), new cache)."""

    @abstractmethod
    def expand(self, cache: Any, count: int) -> Any:
        """The prefilled cache of one prompt (batch 1) repeated to `count` rows."""

    @abstractmethod
    def prefill_batch(self, prompts: list[list[int]], top_k: int = 1) -> tuple[Any, Any]:
        """Run several prompts as one batch (the weights read once), each padded on the left to the longest. Returns
        (logits (N, T, V), a cache of N rows); prompt i's logits are the last len(prompts[i]) positions of row i."""

    def prefill_first(self, prompts: list[list[int]], top_k: int = 1) -> tuple[Any, tuple | None, Any, Any]:
        """`prefill_batch` for the first token first: returns (the logits of each prompt's last position (N, 1, V), their
        statistics (as `statistics`, (N, 1, ...)) or None, the cache, `rest`), where `score_rest(rest)` gives the
        logits and statistics of the positions before the last (N, T - 1, ...), the same as `prefill_batch`'s. A
        backend that can compute lm_head for the last position alone overrides both, so that the first token does not
        wait for the rest (onnx/head.py); this default computes everything at once."""
        logits, cache = self.prefill_batch(prompts, top_k)
        given = self.statistics(cache)
        last = given and tuple(a[:, -1:] for a in given)
        return logits[:, -1:], last, cache, (logits[:, :-1], given and tuple(a[:, :-1] for a in given))

    def score_rest(self, rest: Any) -> tuple[Any, tuple | None]:
        """The logits (N, T - 1, V) and statistics (or None) of the positions `prefill_first` left (see there)."""
        return rest

    @abstractmethod
    def join(self, batch: Any | None, cache: Any, rows: list[int]) -> Any:
        """`batch` (a batch cache; None: no rows yet) with rows `rows` of a prefilled `cache` appended, in that order
        (a prompt's row once per sample)."""

    @abstractmethod
    def select(self, cache: Any, rows: list[int]) -> Any:
        """A batch cache with only `rows` kept, in that order."""

    def release(self, cache: Any) -> None:
        """A batch cache that will not be used again (its last rows left): a backend may keep its memory for the next."""

    @abstractmethod
    def attention(self, input_ids: list[int]) -> Any:
        """Attention probabilities of a whole sequence, computed by this backend: numpy (layers, heads, T, T)."""

    @abstractmethod
    def hidden_states(self, input_ids: list[int]) -> Any:
        """The residual stream of a whole sequence, computed by this backend: numpy float32 (layers + 1, T, d).

        Entry 0 is the input embedding (token + position), entry i the residual after block i; the last
        one is taken before the final layer norm (unlike transformers' `hidden_states`, whose last entry
        has it applied), so every entry can go through the same final layer norm and output head.
        """


class Engine(ABC):
    """A serving engine that decodes by itself (backends/remote.py): it streams a run's token records, not logits.

    It has no forward pass to look into, so what needs one (attention, the Inside view) stays with `Backend`;
    it decodes one sequence per request, so the decoding loop runs N samples as N requests, one after another.
    """

    info: BackendInfo

    @abstractmethod
    def stream_records(self, prompt_ids: list[int], settings: GenerationSettings,
                       stop_event: threading.Event) -> Iterator[TokenRecord]:
        """One sequence decoded with `settings` (its seed included): first the prompt tokens the engine scored
        (`is_prompt`, when it echoes them), then each new token, positions counted from the prompt's start. What
        the engine does not report stays None, never estimated. Ends when the engine finishes, when `stop_event` is
        set, or when the consumer closes the iterator (which ends the request)."""
