"""ONNX Runtime sessions: providers, session options, and the runners that drive an export's graphs.

The backend (`backends/onnx.py`) and the exporter's verification (`onnx/export.py`) both use these
runners, so neither imports the other.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from .head import FIRST_INPUT, HEAD_FILE, HIDDEN_OUTPUT
from .prompt import PROMPT_CACHE_COPY, PROMPT_CACHE_KEY, PROMPT_FILE, int8_gemm_is_exact
from .stats import OUTPUTS as STAT_OUTPUTS
from .stats import TOP_K_INPUT as STAT_TOP_K

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
FROM_START = np.zeros(1, dtype=np.int64)  # `logits_from` for every decoding step and a prompt scored whole


def cuda_provider_available() -> bool:
    """Whether onnxruntime lists CUDA. Not proof that it works: sessions are checked with get_providers()."""
    import onnxruntime as ort

    return CUDA in ort.get_available_providers()


def decoder_session(model_path: Path, providers: list[str], threads: int | None = None):
    """The InferenceSession of an export's decoder. Where CUDA runs an int8-cache decoder (the int4 variant's,
    onnx/export.py `INT8_KV_CACHE_VARIANTS`), it is loaded again as the fp32-cache one (onnx/fusion.py `float_cache`):
    onnxruntime's CUDA GroupQueryAttention takes fp16 or bf16 activations and no attention bias, so with this graph's
    it would run on the CPU; the CPU keeps the int8 cache, which long contexts wait for. Other graphs load once."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), session_options(threads), providers=providers)
    int8_cache = any(i.type == "tensor(int8)" for i in session.get_inputs() if i.name.startswith("past_key_values."))
    if session.get_providers()[0] == CUDA and int8_cache:
        import onnx

        from .fusion import float_cache

        model = onnx.load(str(model_path))
        float_cache(model)
        session = ort.InferenceSession(model.SerializeToString(), session_options(threads), providers=providers)
    return session


def session_options(threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Set deliberately: all cores for one batch-1 run's kernels; no inter-op parallelism to fight with.
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # A run's threads stop spinning when it ends. A decoder has two or three sessions (prompt, steps, head), each with
    # its own threads: a session's threads still spinning after its run took the cores from the next session's run.
    # Measured (random:gpt2 int8, 32-token prompt, back-to-back runs, 2 threads): time to first token 23.8-35.7 ms with
    # the default, 17.8 with this; decoding unchanged (125-133 tokens/s both). Within a run the threads still spin.
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


def untouched(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An array whose memory costs nothing until written, page by page: an anonymous mapping (zeros when read).

    For the in-place cache's context-sized buffers, of which a run writes only the first positions of every head.
    np.empty would do, but numpy advises the kernel to back large arrays with 2 MB huge pages, and the first write in
    each 256 kB head slab (1024 positions x 64 x 4 bytes) then faults in and zeroes a whole 2 MB page: every page of
    the buffer. Measured on this machine (transparent huge pages on `madvise`): 24 buffers (9, 12, 1024, 64) with
    their first 10 positions written took 137 ms with np.empty and 1.4 ms with huge pages not advised; a batch
    joining 8 runs of GPT-2 small took 1.6 s. A mapping of our own is not advised, so it stays on 4 kB pages."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer(mmap.mmap(-1, max(size, 1)), dtype=dtype, count=int(np.prod(shape))).reshape(shape)


DROP_PADDING = 64  # positions of padding that every row of a batch has, dropped when a row leaves (see _select_in_slots)


def cache_array(shape: tuple[int, ...], dtype, width: int) -> np.ndarray:
    """A context-sized cache buffer (N, H, capacity, D) of which the first `width` positions of each head are about to be
    written: `untouched` for a few (each 4 kB page costs a fault only when written), np.empty (2 MB huge pages, each
    faulted in once and zeroed) for many. Measured on this machine, 24 GPT-2 buffers of 15 rows: 10 positions written,
    1.4 ms untouched against 137 ms np.empty; 600 positions, 2.3 s untouched (a fault per 4 kB) against 0.2 s."""
    return np.empty(shape, dtype=dtype) if width >= shape[2] // 4 else untouched(shape, dtype)


class OnnxCache(NamedTuple):
    """The cache of a batch of rows: per layer key and value (`past`), the positions each row holds (`length`, the
    same for every row), and how many of a row's first positions are padding (`pads`, (N,) int64; None: none).

    Rows of different runs decode in one batch (batching.py's DecodeBatch): a shorter row is padded on the left
    with zeros, which the attention mask hides, and its positions are counted from its own first token, so it
    computes what it would alone."""

    past: Any
    length: int
    pads: np.ndarray | None = None


class OnnxRunner:
    """One InferenceSession over an export's decoder-with-past graph, with the KV-cache bookkeeping.

    A cache is an `OnnxCache` (per layer key and value, past length, each row's padding). Exports since
    format 7 write the cache in place (`kv_cache: in_place` in the model's metadata, see onnx/fusion.py):
    each layer's keys and values live in a buffer of the model's whole context, (N, H, context, D), bound
    as both the past input and the present output (IO binding), and a step appends its one position; on
    the CPU the buffers are numpy arrays (pages cost nothing until written; a batch's rows live in slots
    of them, see `release`), on CUDA device OrtValues. Older graphs
    (and fp16, which keeps optimum's attention) return a new, longer cache each step: on the CPU plain
    `run` with numpy arrays, on CUDA IO binding keeps the cache on the device (only logits come back).
    """

    def __init__(self, model_path: Path, providers: list[str], threads: int | None = None, io_binding: bool | None = None,
                 context: int | None = None, prompt_graph: bool = True):
        import onnxruntime as ort

        self.session = decoder_session(model_path, providers, threads)
        self.provider = self.session.get_providers()[0]  # what really runs, not what was asked for
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.past_names = [n for n in inputs if n.startswith("past_key_values.")]
        self.present_names = [o.name for o in self.session.get_outputs() if o.name.startswith("present.")]
        self.output_names = ["logits", *self.present_names]
        shape = inputs[self.past_names[0]].shape  # [batch, n_head, past_len, head_dim]
        self.n_head, self.head_dim = int(shape[1]), int(shape[3])
        cache_type = inputs[self.past_names[0]].type  # tensor(float), tensor(float16), or tensor(int8) (onnx/fusion.py)
        self.past_dtype = {"tensor(float16)": np.float16, "tensor(int8)": np.int8}.get(cache_type, np.float32)
        self.device_type = "cuda" if self.provider == CUDA else "cpu"
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.in_place = metadata.get("kv_cache") == "in_place"
        self.context = context or 1024  # the buffers' capacity: the model's context (GPT-2: n_positions)
        self._spare: list[np.ndarray] | None = None  # the slots of the last batch that emptied (see `release`)
        self.io_binding = self.in_place or ((self.provider == CUDA) if io_binding is None else io_binding)
        # Exports since format 8 also compute each position's statistics (onnx/stats.py) in the same run.
        outputs = {o.name: o for o in self.session.get_outputs()}
        self.has_statistics = self.in_place and all(name in outputs for name in STAT_OUTPUTS)
        # Whether runs fetch them; off, onnxruntime skips their nodes (bench/loop.py's bare loop, a reference).
        self.computes_statistics = self.has_statistics
        vocab = outputs["logits"].shape[-1]
        self.vocab = vocab if isinstance(vocab, int) else None  # static in GPT-2 exports
        # Exports since format 10 can score a prompt's last position alone, and the rest with their head graph (onnx/head.py).
        self.has_first = self.in_place and FIRST_INPUT in inputs and HIDDEN_OUTPUT in outputs
        self._head_args = (model_path.parent / HEAD_FILE, providers, threads)
        self._head: HeadRunner | None = None
        # Quantized exports since format 13 run prompts with prompt.onnx, in int8 GEMMs (onnx/prompt.py), on the CPU.
        # Why not, where there is one: "device" (not the CPU) or "int8_gemm" (the CPU's int8 GEMM is not exact).
        self.prompt_session, self.prompt_off = None, None
        prompt_path = model_path.parent / PROMPT_FILE
        if prompt_graph and prompt_path.exists() and self.in_place:
            if self.provider != CPU:
                self.prompt_off = "device"
            elif not int8_gemm_is_exact():
                self.prompt_off = "int8_gemm"
            else:
                self.prompt_session = ort.InferenceSession(str(prompt_path), session_options(threads), providers=[CPU])
        # Over an int8 cache the prompt graph returns the prompt's keys and values, copied into the buffers (onnx/prompt.py
        # `fill_int8_cache`); it only runs prompts with nothing cached before them.
        self.prompt_copies_cache = self.prompt_session is not None and (
            self.prompt_session.get_modelmeta().custom_metadata_map.get(PROMPT_CACHE_KEY) == PROMPT_CACHE_COPY)

    def _feed(self, ids: list[int], past_len: int) -> dict[str, np.ndarray]:
        n = len(ids)
        return self._from_start({
            "input_ids": np.asarray([ids], dtype=np.int64),  # (1, n)
            "attention_mask": np.ones((1, past_len + n), dtype=np.int64),
            "position_ids": np.arange(past_len, past_len + n, dtype=np.int64)[None],  # (1, n)
        })

    def _from_start(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`feed` with logits at every position it feeds, for a graph that can skip some (onnx/head.py)."""
        if self.has_first:
            feed[FIRST_INPUT] = FROM_START
        return feed

    def _step_feed(self, token_ids: list[int], past_len: int, pads: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """One new token per row after `past_len` cached positions, of which row r's first `pads[r]` are padding."""
        rows = len(token_ids)
        mask = np.ones((rows, past_len + 1), dtype=np.int64)  # (N, past + 1)
        positions = np.full((rows, 1), past_len, dtype=np.int64)  # (N, 1)
        if pads is not None:
            mask[np.arange(past_len + 1)[None, :] < pads[:, None]] = 0  # a row's padding is never attended to
            positions -= pads[:, None]  # each row counts its positions from its own first token
        return self._from_start({"input_ids": np.asarray(token_ids, dtype=np.int64)[:, None], "attention_mask": mask,
                                 "position_ids": positions})

    def _buffers(self, rows: int, width: int = 1) -> list:
        """Empty in-place cache buffers for `rows` sequences, (rows, H, context, D) per layer key and value, of which the
        first `width` positions are about to be written (see `cache_array`)."""
        import onnxruntime as ort

        shape = (rows, self.n_head, self.context, self.head_dim)
        if self.device_type == "cpu":
            # Not filled: attention reads only the first past-length positions (tests poison the rest with NaN), and
            # filling them costs time to first token: 24 GPT-2 buffers took 10.1 ms per run with np.zeros, 1.8 with
            # np.empty; see `untouched` for why not np.empty now.
            return CacheBuffers(CpuBuffer(cache_array(shape, self.past_dtype, width)) for _ in self.past_names)
        return CacheBuffers(ort.OrtValue.ortvalue_from_shape_and_type(shape, self.past_dtype, self.device_type, 0)
                            for _ in self.past_names)

    def _empty_past(self, rows: int = 1, width: int = 1) -> list:
        if self.in_place:
            return self._buffers(rows, width)
        empty = np.zeros((rows, self.n_head, 0, self.head_dim), dtype=self.past_dtype)  # (N, H, 0, D)
        if self.io_binding:
            import onnxruntime as ort

            return [ort.OrtValue.ortvalue_from_numpy(empty, self.device_type, 0) for _ in self.past_names]
        return [empty] * len(self.past_names)

    def _run_feed(self, feed: dict[str, np.ndarray], past: list, hidden: bool = False) -> tuple[np.ndarray, list]:
        """Run the graph on `feed` after `past`; returns (logits (N, n, V) as the graph gives them, new past). With
        `hidden` (an in-place graph that has it), lm_head's input comes back too, as `past.hidden`."""
        if not self.io_binding:
            feed.update(zip(self.past_names, past))
            logits, *present = self.session.run(self.output_names, feed)
            return logits, present
        if self.in_place:
            return self._run_in_place(feed, past, hidden)
        binding = self.session.io_binding()
        for name, value in feed.items():
            binding.bind_cpu_input(name, value)
        for name, value in zip(self.past_names, past):
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        for name in self.present_names:
            binding.bind_output(name, self.device_type, 0)  # stays on the device for the next step
        self.session.run_with_iobinding(binding)
        logits, *present = binding.get_outputs()
        return logits.numpy(), present

    def _run_in_place(self, feed: dict[str, np.ndarray], past: "CacheBuffers", hidden: bool = False) -> tuple[np.ndarray, "CacheBuffers"]:
        """One run on cache buffers that are both past and present. The binding is made once per set of buffers
        (each step rebinds only the three small inputs), and a step's logits land in one of two preallocated arrays,
        used in turn: a step's logits stay valid while the caller reads them after the next step started."""
        stats = STAT_OUTPUTS if self.computes_statistics else ()
        rows, new = feed["input_ids"].shape
        step = new == 1 and past.vocab
        if not step and self.prompt_copies_cache and feed["attention_mask"].shape[1] == new:
            return self._run_prompt_copying_cache(feed, past, stats, hidden)
        if step or self.prompt_session is None or self.prompt_copies_cache:
            binding = past.binding
            if binding is None:
                binding = past.binding = self._bind_cache(self.session, past, stats)
        else:  # a prompt: by prompt.onnx, on the same buffers; the steps' binding stays as it is
            binding = self._bind_cache(self.prompt_session, past, stats)
        for name, value in feed.items():
            binding.bind_cpu_input(name, value)
        if step:  # a decoding step
            out = past.next_logits(rows)
            binding.bind_output("logits", "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
            if past.stats_rows != rows:  # arrays for this batch size, bound once
                if stats:
                    past.stats = step_statistics(rows, int(past.top_k[0]))
                    for name, array in zip(stats, past.stats):
                        binding.bind_output(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)
                if self.has_first:  # lm_head's input too (contrastive search reads it): N x E floats, next to N x V logits
                    past.step_hidden = np.empty((rows, 1, self.n_head * self.head_dim), dtype=np.float32)  # (N, 1, E)
                    binding.bind_output(HIDDEN_OUTPUT, "cpu", 0, np.float32, list(past.step_hidden.shape),
                                        past.step_hidden.ctypes.data)
                past.stats_rows = rows
            self.session.run_with_iobinding(binding)
            past.last_hidden = past.step_hidden
            return out, past
        for name in ("logits", *stats):  # the prompt: (1, T, V) and (1, T, k), allocated by onnxruntime
            binding.bind_output(name, "cpu")
        if hidden:
            binding.bind_output(HIDDEN_OUTPUT, "cpu")  # bound last: the last of get_outputs()
        (self.session if binding is past.binding else self.prompt_session).run_with_iobinding(binding)
        outputs = binding.get_outputs()
        if hidden:
            past.binding = None  # decoding steps bind anew
        return self._prompt_ran(past, [value.numpy() for value in outputs[: 1 + len(stats)]],
                                outputs[-1].numpy() if hidden else None)

    def _run_prompt_copying_cache(self, feed: dict[str, np.ndarray], past: "CacheBuffers", stats: tuple,
                                  hidden: bool) -> tuple[np.ndarray, "CacheBuffers"]:
        """A prompt with nothing cached before it, by a prompt graph that returns its int8 keys and values (N, H, T, D):
        they are copied into the first T positions of the cache's buffers."""
        binding = self.prompt_session.io_binding()
        for name in ("logits", *stats, *self.present_names):
            binding.bind_output(name, "cpu")
        if hidden:
            binding.bind_output(HIDDEN_OUTPUT, "cpu")
        for name, value in feed.items():
            binding.bind_cpu_input(name, value)
        if self.has_statistics:
            binding.bind_cpu_input(STAT_TOP_K, past.top_k)
        self.prompt_session.run_with_iobinding(binding)
        outputs = [value.numpy() for value in binding.get_outputs()]
        width = feed["input_ids"].shape[1]
        for buffer, present in zip(past, outputs[1 + len(stats): 1 + len(stats) + len(self.present_names)]):
            buffer.array[:, :, :width] = present
        return self._prompt_ran(past, outputs[: 1 + len(stats)], outputs[-1] if hidden else None)

    @staticmethod
    def _prompt_ran(past: "CacheBuffers", computed: list, hidden: np.ndarray | None) -> tuple[np.ndarray, "CacheBuffers"]:
        """After a prompt's run: `computed` is its logits (N, T, V) then its statistics; they and lm_head's input
        (`hidden`, (N, T, E), where asked for) are kept on `past` for the loop, and the next step binds its own arrays."""
        logits, *statistics = computed
        past.vocab = logits.shape[-1]
        past.stats = tuple(statistics) if statistics else None
        past.stats_rows = 0
        past.last_hidden = None
        if hidden is not None:
            past.hidden = past.last_hidden = hidden
        return logits, past

    def _bind_cache(self, session, past: "CacheBuffers", stats: tuple):
        """A binding of `session` to the cache buffers (past and present alike), the logits and statistics outputs, and
        the statistics' top-k input."""
        binding = session.io_binding()
        for name in ("logits", *stats):  # first: get_outputs() lists outputs in the order they were first bound
            binding.bind_output(name, "cpu")
        for names in (self.past_names, self.present_names):
            for name, value in zip(names, past):
                (binding.bind_ortvalue_input if names is self.past_names else binding.bind_ortvalue_output)(
                    name, value.ortvalue if isinstance(value, CpuBuffer) else value)
        if self.has_statistics:
            binding.bind_cpu_input(STAT_TOP_K, past.top_k)  # the graph needs it fed, fetched or not
        return binding

    def run(self, ids: list[int], past: list, past_len: int) -> tuple[np.ndarray, list]:
        """Feed `ids` after `past_len` cached positions (batch 1); returns (logits (n, V), new past)."""
        if self.in_place and past_len + len(ids) > self.context:
            raise ValueError(f"{past_len + len(ids)} positions do not fit the {self.context}-position cache")
        logits, present = self._run_feed(self._feed(ids, past_len), past)
        return logits[0], present

    def prefill(self, ids: list[int], top_k: int = 1) -> tuple[torch.Tensor, Any]:
        """Run the prompt; a graph that computes the statistics (`statistics`) gives the top-`top_k` alternatives."""
        past = self._empty_past(1, len(ids))
        if isinstance(past, CacheBuffers):
            past.top_k = np.array([max(1, min(top_k, self.vocab or top_k))], dtype=np.int64)
        logits, past = self.run(ids, past, 0)
        return torch.from_numpy(logits.astype(np.float32, copy=False)), OnnxCache(past, len(ids))

    def prefill_batch(self, prompts: list[list[int]], top_k: int = 1) -> tuple[torch.Tensor, OnnxCache]:
        """Run several prompts as one batch, each padded on the left to the longest (masked; positions counted from
        each prompt's first token). Returns (logits (N, T, V), the cache of N rows with their padding): the weights are
        read once for all of them. One prompt is `prefill`'s run exactly."""
        if len(prompts) == 1:
            logits, cache = self.prefill(prompts[0], top_k)
            return logits[None], cache
        logits, cache = self._run_prompts(prompts, top_k)
        return torch.from_numpy(logits.astype(np.float32, copy=False)), cache

    def _run_prompts(self, prompts: list[list[int]], top_k: int, last_only: bool = False) -> tuple[np.ndarray, OnnxCache]:
        """`prefill_batch`'s run; `last_only`: the logits of the last position alone, and `hidden` kept on the cache."""
        width = max(len(ids) for ids in prompts)
        pads = np.array([width - len(ids) for ids in prompts], dtype=np.int64)
        if self.in_place and width > self.context:
            raise ValueError(f"{width} positions do not fit the {self.context}-position cache")
        past = self._empty_past(len(prompts), width)
        if isinstance(past, CacheBuffers):
            past.top_k = np.array([max(1, min(top_k, self.vocab or top_k))], dtype=np.int64)
        columns = np.arange(width)[None, :]  # (1, T)
        feed = self._from_start({
            "input_ids": np.array([[0] * pad + list(ids) for pad, ids in zip(pads, prompts)], dtype=np.int64),  # (N, T)
            "attention_mask": (columns >= pads[:, None]).astype(np.int64),  # (N, T): 0 on the padding
            "position_ids": np.maximum(columns - pads[:, None], 0)})  # (N, T): from each prompt's first token
        if last_only:
            feed[FIRST_INPUT] = np.array([width - 1], dtype=np.int64)
        logits, past = self._run_feed(feed, past, hidden=last_only)  # (N, T, V), or (N, 1, V)
        cache = OnnxCache(past, width, pads if pads.any() else None)
        self._zero_padding(cache)
        return logits, cache

    def prefill_first(self, prompts: list[list[int]], top_k: int = 1):
        """`Backend.prefill_first` for a graph that has `logits_from` (`has_first`): the last position's logits (N, 1, V)
        and statistics, the cache, and what `score_rest` needs for the other positions (lm_head's input there)."""
        logits, cache = self._run_prompts(prompts, top_k, last_only=True)
        past = cache.past
        hidden, past.hidden = past.hidden[:, :-1], None  # (N, T - 1, E): the positions before the last
        if cache.pads is not None:
            for row, pad in enumerate(cache.pads):
                hidden[row, :pad] = 0  # padding: never read, but kept finite
        return torch.from_numpy(logits.astype(np.float32, copy=False)), past.stats, cache, (hidden, past.top_k)

    def score_rest(self, rest) -> tuple[torch.Tensor, tuple[np.ndarray, ...] | None]:
        """The logits (N, T - 1, V) and statistics of the positions `prefill_first` left, by the head graph."""
        hidden, top_k = rest
        if self._head is None:  # created on first use
            self._head = HeadRunner(*self._head_args)
        logits, stats = self._head.run(hidden, top_k, self.computes_statistics)
        return torch.from_numpy(logits.astype(np.float32, copy=False)), stats

    def _zero_padding(self, cache: OnnxCache) -> None:
        """Zeros in every padded position of the cache: what a padded row's attention computed there is never read (the
        mask hides it) but must stay finite, as it still enters the attention's matmuls."""
        if cache.pads is None or not cache.pads.any():
            return
        for value in cache.past:
            host = value.array if isinstance(value, CpuBuffer) else value if isinstance(value, np.ndarray) else None
            if host is None:  # on the device: through the host once (prompts of several lengths joining at once)
                continue
            for row, pad in enumerate(cache.pads):
                host[row, :, :pad] = 0

    def last_hidden(self, cache: Any) -> np.ndarray | None:
        """lm_head's input (after the final layer norm) at the positions of the latest run on `cache`, (N, T, E); None
        where the graph does not give it (no `hidden` output: fp16) or the run did not fetch it."""
        past = cache.past
        return past.last_hidden if isinstance(past, CacheBuffers) and self.has_first else None

    def statistics(self, cache: Any) -> tuple[np.ndarray, ...] | None:
        """The statistics the graph computed in the latest run on `cache`: top logits (N, T, k), their ids (N, T, k),
        log-sum-exp (N, T) and mean logit (N, T); None for a graph without them."""
        past = cache.past
        return past.stats if isinstance(past, CacheBuffers) else None

    def step(self, token_id: int, cache: Any) -> tuple[torch.Tensor, Any]:
        logits, cache = self.step_batch([token_id], cache)
        return logits[0], cache  # (V,)

    def step_batch(self, token_ids: list[int], cache: OnnxCache) -> tuple[torch.Tensor, OnnxCache]:
        """One token per row; returns (logits (N, V) float32, new cache). A view of the graph's output, no copy."""
        past, past_len, pads = cache
        if self.in_place and past_len + 1 > self.context and pads is not None and self._in_slots(past):
            cache = self._select_in_slots(cache, list(range(len(token_ids))), drop_padding=True)  # room from the padding
            past, past_len, pads = cache
        if self.in_place and past_len + 1 > self.context:
            raise ValueError(f"{past_len + 1} positions do not fit the {self.context}-position cache")
        logits, present = self._run_feed(self._step_feed(token_ids, past_len, pads), past)  # logits (N, 1, V)
        return torch.from_numpy(logits[:, -1].astype(np.float32, copy=False)), OnnxCache(present, past_len + 1, pads)

    def expand(self, cache: OnnxCache, count: int) -> OnnxCache:
        """The prompt's cache (1, H, T, D) per layer, repeated to (count, H, T, D): copied once, at the start of a batch."""
        return self.select(cache, [0] * count)

    def select(self, cache: OnnxCache, rows: list[int]) -> OnnxCache:
        """Keep only `rows` of every layer's cache (finished rows leave the batch). Padding that every kept row has
        is dropped on the way (the copy is made anyway), so the batch is never wider than its longest row."""
        past, past_len, pads = cache
        if self._in_slots(past) and all(a < b for a, b in zip(rows, rows[1:])):
            return self._select_in_slots(cache, list(rows))
        if self._in_slots(past) and len(rows) <= past[0].slab.shape[0]:  # beams: rows repeated or reordered
            return self._reorder_in_slots(cache, list(rows))
        index = np.asarray(rows, dtype=np.int64)
        pads = None if pads is None else pads[index]
        drop = int(pads.min()) if pads is not None and len(index) else 0
        if drop:
            pads = pads - drop
        return OnnxCache(self._rows_of([past], [(index, drop, 0)], past_len - drop), past_len - drop,
                         pads if pads is not None and pads.any() else None)

    def join(self, batch: OnnxCache | None, cache: OnnxCache, rows: list[int]) -> OnnxCache:
        """`batch` (None: no rows yet) with rows `rows` of `cache` (prefilled prompts) appended, in that order (a row
        repeated once per sample). The shorter side is padded on the left to the longer one's length: one copy of
        everything, however many runs join at once."""
        index = np.asarray(rows, dtype=np.int64)
        own = cache.pads[index] if cache.pads is not None else np.zeros(len(index), dtype=np.int64)
        if batch is None and len(index) == self._batch_rows(cache.past) and (index == np.arange(len(index))).all():
            return OnnxCache(cache.past, cache.length, own if own.any() else None)  # the prompts' cache is the batch's
        if (batch is None or self._in_slots(batch.past)) and self._in_slots(cache.past):
            return self._join_in_slots(batch, cache, index, own)
        width = max(cache.length, batch.length if batch is not None else 0)
        if self.in_place and width + 1 > self.context:  # cannot happen while every row fits the context on its own
            raise ValueError(f"{width + 1} positions do not fit the {self.context}-position cache")
        sources, parts, pads = [], [], []
        if batch is not None:
            count = self._batch_rows(batch.past)
            sources.append(batch.past)
            parts.append((np.arange(count), 0, width - batch.length))
            pads.append((batch.pads if batch.pads is not None else np.zeros(count, dtype=np.int64)) + (width - batch.length))
        sources.append(cache.past)
        parts.append((index, 0, width - cache.length))
        pads.append(own + (width - cache.length))
        pads = np.concatenate(pads)
        return OnnxCache(self._rows_of(sources, parts, width), width, pads if pads.any() else None)

    # Slots. On the CPU the batch's in-place buffers are slabs of R rows (R grows by doubling) whose first N rows are
    # bound: a run that joins is copied into the next free rows, and when rows leave, the rows after them move down.
    # Only the rows that move are copied, and into memory already written; building new buffers instead (the other
    # paths) copies every row into fresh pages: 16 rows of 600 positions took 2.3 s for one row to leave that way.

    def release(self, cache: OnnxCache | None) -> None:
        """A batch's cache that is no longer used: its slots are kept for the next batch to join (their pages are
        written already; fresh ones cost a fault each, slow on this machine: 16 rows of 600 positions took 2.3 s)."""
        if cache is not None and self._in_slots(cache.past):
            slabs = [buffer.slab for buffer in cache.past]
            if self._spare is None or slabs[0].shape[0] >= self._spare[0].shape[0]:
                self._spare = slabs

    @staticmethod
    def _in_slots(past) -> bool:
        return isinstance(past, CacheBuffers) and len(past) > 0 and isinstance(past[0], CpuBuffer)

    @staticmethod
    def _bound(slabs: list[np.ndarray], rows: int, like: "CacheBuffers", top_k: np.ndarray | None = None) -> "CacheBuffers":
        """New buffers over the first `rows` rows of `slabs` (no copy; a new binding)."""
        out = CacheBuffers(CpuBuffer(slab[:rows], slab=slab) for slab in slabs)
        out.vocab, out.top_k = like.vocab, like.top_k if top_k is None else top_k
        return out

    def _select_in_slots(self, cache: OnnxCache, rows: list[int], drop_padding: bool = False) -> OnnxCache:
        """`select` in place: kept row `rows[i]` moves to row i (rows ascending, so a move never overwrites a row still
        to be moved). Padding every kept row has is dropped only when it is worth a copy of every row (DROP_PADDING
        positions, or `drop_padding`: the context is full): the attention reads the padded positions too."""
        past, width, pads = cache
        slabs = [buffer.slab for buffer in past]
        for i, source in enumerate(rows):
            if source != i:
                for slab in slabs:
                    slab[i, :, :width] = slab[source, :, :width]  # (H, width, D)
        pads = None if pads is None else pads[np.asarray(rows, dtype=np.int64)]
        drop = int(pads.min()) if pads is not None and rows else 0
        if drop and (drop >= DROP_PADDING or drop_padding):
            for slab in slabs:
                for i in range(len(rows)):
                    slab[i, :, :width - drop] = slab[i, :, drop:width].copy()
            pads, width = pads - drop, width - drop
        return OnnxCache(self._bound(slabs, len(rows), past), width, pads if pads is not None and pads.any() else None)

    def _reorder_in_slots(self, cache: OnnxCache, rows: list[int]) -> OnnxCache:
        """`select` in place for rows in any order, repeated or not (beam search: each next beam is its parent's row): the
        rows that change are gathered first (numpy's fancy indexing copies its source), then written to their slots.
        The same number of rows keeps the same buffers and binding (a beam step changes no shapes)."""
        past, width, pads = cache
        moved = [(i, source) for i, source in enumerate(rows) if source != i]  # the slots whose row changes
        # Sources that a move overwrites before it is read are saved first; the rest are copied slot to slot. (A beam
        # step has none: a slot changes only when its own beam was dropped, see decoding/beam.py.)
        targets = {i for i, _ in moved}
        saved = sorted({source for _, source in moved if source in targets})
        for buffer in past if moved else ():
            slab = buffer.slab
            kept = {source: slab[source, :, :width].copy() for source in saved}  # (H, width, D) each
            for i, source in moved:
                slab[i, :, :width] = kept[source] if source in kept else slab[source, :, :width]
        pads = None if pads is None else pads[np.asarray(rows, dtype=np.int64)]
        pads = pads if pads is not None and pads.any() else None
        if len(rows) == self._batch_rows(past):
            return OnnxCache(past, width, pads)
        return OnnxCache(self._bound([buffer.slab for buffer in past], len(rows), past), width, pads)

    def _join_in_slots(self, batch: OnnxCache, cache: OnnxCache, index: np.ndarray, own: np.ndarray) -> OnnxCache:
        """`join` in place: the joining rows are copied into the slots after the batch's rows (the slabs grow when full);
        a prompt longer than the batch moves every row right first."""
        if batch is None:  # the first rows: the slots of the last batch that emptied, or slots for them alone
            first, spare, self._spare = cache.past[0].array, self._spare, None
            slabs = spare if spare and spare[0].shape[0] >= len(index) and spare[0].dtype == first.dtype else [
                cache_array((len(index), *first.shape[1:]), first.dtype, cache.length) for _ in cache.past]
            batch = OnnxCache(self._bound(slabs, 0, cache.past), cache.length)
        n, width = self._batch_rows(batch.past), max(batch.length, cache.length)
        slabs = [buffer.slab for buffer in batch.past]
        if n + len(index) > slabs[0].shape[0]:  # full: twice the slots (the rows written so far copied once)
            capacity = max(2 * slabs[0].shape[0], n + len(index))
            grown = [cache_array((capacity, *slab.shape[1:]), slab.dtype, width) for slab in slabs]
            for new, old in zip(grown, slabs):
                for i in range(n):
                    new[i, :, :batch.length] = old[i, :, :batch.length]
            slabs = grown
        pads = batch.pads.copy() if batch.pads is not None else np.zeros(n, dtype=np.int64)
        if width > batch.length:  # every row moves right; zeros before it
            shift = width - batch.length
            for slab in slabs:
                for i in range(n):
                    slab[i, :, shift:width] = slab[i, :, :batch.length].copy()
                    slab[i, :, :shift] = 0
            pads += shift
        offset = width - cache.length
        for slab, source in zip(slabs, cache.past):
            for j, row in enumerate(index):
                slab[n + j, :, offset:width] = source.array[row, :, :cache.length]
                if offset:
                    slab[n + j, :, :offset] = 0  # finite: a masked position still enters the attention's matmuls
        pads = np.concatenate([pads, own + offset])
        top_k = max(batch.past.top_k, cache.past.top_k, key=lambda top_k: int(top_k[0]))
        past = self._bound(slabs, n + len(index), batch.past, top_k)
        return OnnxCache(past, width, pads if pads.any() else None)

    @staticmethod
    def _batch_rows(past: list) -> int:
        value = past[0]
        if isinstance(value, CpuBuffer):
            return value.array.shape[0]
        return value.shape[0] if isinstance(value, np.ndarray) else value.shape()[0]

    def _rows_of(self, sources: list, parts: list, width: int) -> list:
        """A new cache of `width` positions whose part i is made of rows of `sources[i]` (see `_rows`)."""
        past = sources[0]
        rows = [self._rows([source[layer] for source in sources], parts, width) for layer in range(len(past))]
        if isinstance(past, CacheBuffers):
            rows = CacheBuffers(rows)
            # Alternatives for the run that asks for the most; the others read the first of them (largest first).
            rows.vocab, rows.top_k = past.vocab, max((s.top_k for s in sources), key=lambda top_k: int(top_k[0]))
        return rows

    def _rows(self, values: list, parts: list, width: int):
        """One layer's key or value for a new batch: part i, (index, start, pad), takes rows `index` of `values[i]`, their
        positions from `start` on, shifted right by `pad` (zeros before them), `width` positions in all. Where the
        cache lives: numpy on the CPU, an OrtValue on the device (through the host). Done when rows join or leave,
        never per step."""
        import onnxruntime as ort

        hosts = [v.array if isinstance(v, CpuBuffer) else v if isinstance(v, np.ndarray) else v.numpy() for v in values]
        count = sum(len(index) for index, _, _ in parts)
        first = hosts[0]
        capacity = first.shape[2] if self.in_place else width  # in place: the buffers keep the model's context
        shape = (count, first.shape[1], capacity, first.shape[3])  # (n, H, capacity, D)
        out = cache_array(shape, first.dtype, width) if isinstance(values[0], CpuBuffer) else np.empty(shape, dtype=first.dtype)
        row = 0
        for i, (index, start, pad) in enumerate(parts):
            host = hosts[i]
            n, kept = len(index), width - pad  # positions of this part after its padding
            if pad:
                out[row: row + n, :, :pad] = 0  # finite: a masked position still enters the attention's matmuls
            out[row: row + n, :, pad:width] = host[index, :, start: start + kept]
            row += n
        if isinstance(values[0], CpuBuffer):
            return CpuBuffer(out)
        if not self.io_binding:
            return out
        return ort.OrtValue.ortvalue_from_numpy(out, self.device_type, 0)


class HeadRunner:
    """The head graph of an export (onnx/head.py): lm_head and the statistics over given hidden states.

    Its threads do not spin-wait after a run (onnxruntime's default), so as not to hold the cores the decoder's next
    steps need: with spinning, the two decoding steps after scoring a 32-token prompt took 18.1 and 16.1 ms, without
    it 11.5 and 10.0 (medians of 10, int8 GPT-2 small, 2 cores, two alternated runs each: scripts/head_spin.py). It
    runs once per prompt, so waking its threads costs little."""

    def __init__(self, model_path: Path, providers: list[str], threads: int | None = None):
        import onnxruntime as ort

        options = session_options(threads)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(model_path), options, providers=providers)
        names = {o.name for o in self.session.get_outputs()}
        self.stat_names = [name for name in STAT_OUTPUTS if name in names]

    def run(self, hidden: np.ndarray, top_k: np.ndarray, statistics: bool = True) -> tuple[np.ndarray, tuple | None]:
        """Logits (N, S, V) and, when asked and computed, the statistics (N, S, k), ... of `hidden` (N, S, E)."""
        names = ["logits", *(self.stat_names if statistics else ())]
        feed = {HIDDEN_OUTPUT: np.ascontiguousarray(hidden), FIRST_INPUT: FROM_START}
        if self.stat_names:
            feed[STAT_TOP_K] = top_k
        logits, *stats = self.session.run(names, feed)
        return logits, tuple(stats) if stats else None


class CacheBuffers(list):
    """An in-place cache: per layer key and value buffers (N, H, context, D), with the IO binding made for them and
    two logits arrays (N, 1, V) that decoding steps write in turn."""

    def __init__(self, buffers=()):
        super().__init__(buffers)
        self.binding = None
        self.hidden: np.ndarray | None = None  # lm_head's input of a prompt's run that asked for it (N, T, E)
        self.step_hidden: np.ndarray | None = None  # the array decoding steps write lm_head's input into (N, 1, E)
        self.last_hidden: np.ndarray | None = None  # lm_head's input of the latest run, where it was fetched (N, T, E)
        self.vocab = 0  # known after the prompt's run
        self.top_k = np.ones(1, dtype=np.int64)  # the alternatives a graph with statistics computes (bound as an input)
        self.stats: tuple[np.ndarray, ...] | None = None  # the latest run's statistics (OnnxRunner.statistics)
        self.stats_rows = 0  # the batch size of the step arrays bound for them (0: none bound)
        self._logits: list[np.ndarray] = []
        self._turn = 0

    def next_logits(self, rows: int) -> np.ndarray:
        if not self._logits or self._logits[0].shape[0] != rows:
            self._logits = [np.empty((rows, 1, self.vocab), dtype=np.float32) for _ in range(2)]  # (N, 1, V) each
        self._turn ^= 1
        return self._logits[self._turn]


def step_statistics(rows: int, k: int) -> tuple[np.ndarray, ...]:
    """Arrays a decoding step writes its statistics into: top logits and ids (N, 1, k), lse and mean logit (N, 1)."""
    return (np.empty((rows, 1, k), dtype=np.float32), np.empty((rows, 1, k), dtype=np.int64),
            np.empty((rows, 1), dtype=np.float32), np.empty((rows, 1), dtype=np.float32))


class CpuBuffer:
    """An in-place cache buffer on the CPU: the numpy array and the OrtValue over the same memory (no copy)."""

    __slots__ = ("array", "ortvalue", "slab")

    def __init__(self, array: np.ndarray, slab: np.ndarray | None = None):
        import onnxruntime as ort

        self.array = array  # (N, H, context, D); kept here, as the OrtValue does not own the memory
        self.ortvalue = ort.OrtValue.ortvalue_from_numpy(array)
        # The buffer of all the batch's slots (R >= N rows) whose first N rows `array` is: rows join and leave in it.
        self.slab = array if slab is None else slab

    def shape(self) -> list[int]:
        return list(self.array.shape)

    def data_type(self) -> str:
        return {np.dtype(np.float16): "tensor(float16)", np.dtype(np.int8): "tensor(int8)"}.get(self.array.dtype, "tensor(float)")


class AttentionRunner:
    """The analysis graph of an export: one pass over a whole sequence, all layers' attention probabilities and
    residual stream."""

    def __init__(self, model_path: Path, providers: list[str], threads: int | None = None):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(model_path), session_options(threads), providers=providers)
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.attention_names = sorted((o.name for o in self.session.get_outputs() if o.name.startswith("attentions.")),
                                      key=lambda name: int(name.split(".")[1]))
        # hidden_states.0 .. L-1, then the last residual before the final layer norm (see onnx/export.py).
        self.hidden_names = [f"hidden_states.{i}" for i in range(len(self.attention_names))] + ["final_residual"]

    def _run(self, names: list[str], ids: list[int]) -> list[np.ndarray]:
        n = len(ids)
        feed = {
            "input_ids": np.asarray([ids], dtype=np.int64),
            "attention_mask": np.ones((1, n), dtype=np.int64),
            "position_ids": np.arange(n, dtype=np.int64)[None],
        }
        return self.session.run(names, {k: v for k, v in feed.items() if k in self.input_names})

    def attention(self, ids: list[int]) -> np.ndarray:
        """Attention probabilities (L, H, T, T) for `ids`: row q holds what query position q attended to."""
        return np.stack([o[0] for o in self._run(self.attention_names, ids)]).astype(np.float32)  # L x (H, T, T)

    def hidden_states(self, ids: list[int]) -> np.ndarray:
        """The residual stream (L + 1, T, d) for `ids`: embeddings, after each block (the last before the final layer norm)."""
        return np.stack([o[0] for o in self._run(self.hidden_names, ids)]).astype(np.float32)  # (L + 1) x (T, d)
