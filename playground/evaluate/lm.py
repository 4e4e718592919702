"""lm-evaluation-harness's `LM` over a playground backend (PyTorch or ONNX of any variant, GPT-2's BPE or a BertTokenizer):
`loglikelihood` and `loglikelihood_rolling` score through scoring.py (one `prefill` per window, as perplexity does),
`generate_until` runs the one decoding loop (generation.py), greedy, with the task's stop strings. Nothing here computes
a forward pass of its own. This module imports lm-eval (the `tasks` extra): harness.py imports it only once that is known."""

from __future__ import annotations

from lm_eval.api.model import LM

from ..backends.base import Backend
from ..config import MAX_STOP_SEQUENCES, GenerationSettings
from ..errors import PlaygroundError
from ..generation import generate
from ..models import ModelSource
from .scoring import score_stream, score_window
from .windows import Window, sliding_windows

MAX_GENERATED_TOKENS = 256  # lm-eval's own default for generate_until (HFLM's max_gen_toks)


class PlaygroundLM(LM):
    """lm-eval's model interface over a playground backend (PyTorch or ONNX, either tokenizer)."""

    def __init__(self, backend: Backend, source: ModelSource):
        super().__init__()
        self.backend, self.source, self.codec = backend, source, source.codec
        self.context = backend.info.context_length

    def continuation_ids(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids) as lm-eval's HFLM cuts them: the context's trailing spaces move to the
        continuation, and the continuation's tokens are those that encoding the whole adds after the context's, so
        a word keeps the token it has in running text. The context starts as a prompt does (`codec.encode`:
        [CLS] first for a BertTokenizer); an empty context is the model's start token."""
        spaces = len(context) - len(context.rstrip(" "))
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        encode = self.codec.encode
        if not context:
            whole = [self.codec.start_id] + self.codec.tokenizer(continuation, add_special_tokens=False)["input_ids"]
            return whole[:1], whole[1:]
        whole, context_ids = encode(context + continuation), encode(context)
        if whole[: len(context_ids)] == context_ids and len(whole) > len(context_ids):
            return context_ids, whole[len(context_ids):]
        # The two merged across the boundary: the continuation on its own.
        return context_ids, self.codec.tokenizer(continuation, add_special_tokens=False)["input_ids"]

    def score(self, context: str, continuation: str) -> tuple[float, bool]:
        """(ln p(continuation | context), whether greedy decoding would produce it), from one `prefill` of the
        last `context` tokens (scoring.score_window)."""
        context_ids, continuation_ids = self.continuation_ids(context, continuation)
        if not continuation_ids:
            return 0.0, True
        if len(continuation_ids) >= self.context:
            raise PlaygroundError(key="tasks.continuation_too_long", field="tasks", tokens=len(continuation_ids),
                                  context=self.context)
        ids = context_ids + continuation_ids
        window = Window(begin=max(0, len(ids) - self.context), end=len(ids), first_scored=len(context_ids))
        scored = score_window(self.backend, ids, window)
        return float(scored.chosen.double().sum()), scored.greedy()

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        return [self.score(*request.args) for request in requests]

    def loglikelihood_rolling(self, requests) -> list[float]:
        """The whole text after the start token, by the Evaluate tab's sliding windows (a window of the model's
        context, half a window apart: every token scored once; after the first window, with half a window before it
        at least), so that this is the evaluation's negative log-likelihood of the same text."""
        results = []
        for request in requests:
            (text,) = request.args[:1]
            ids = [self.codec.start_id] + self.codec.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) < 2:
                results.append(0.0)
                continue
            windows = sliding_windows(len(ids), self.context, max(1, self.context // 2))
            results.append(-score_stream(self.backend, ids, windows).nll_nats)
        return results

    def generate_until(self, requests) -> list[str]:
        """Greedy text from the one decoding loop, cut before the first of the task's stop strings."""
        outputs = []
        for request in requests:
            context, kwargs = request.args[0], dict(request.args[1] or {})
            until = kwargs.get("until") or ()
            until = [until] if isinstance(until, str) else [s for s in until if s][:MAX_STOP_SEQUENCES]
            most = min(int(kwargs.get("max_gen_toks") or MAX_GENERATED_TOKENS), self.context - 1)
            settings = GenerationSettings(max_new_tokens=most, do_sample=False, stop_sequences=tuple(until),
                                          top_alternatives=1, seed=0)
            outputs.append(generate(self.backend, self.source, context, settings).text)
        return outputs
