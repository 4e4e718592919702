"""One evaluation: a model on a backend and variant scored on a text (perplexity, bits per byte, the KL divergence of a
quantized variant to fp32), checked before anything loads; several of them as one table, saved to the history."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

from ..config import as_int
from ..errors import PlaygroundError
from ..history import LOCAL_OWNER, HistoryStore
from ..machine import machine_description
from ..onnx.export import VARIANTS
from ..registry import ModelRegistry
from .harness import TaskSpec, run_tasks
from .scoring import score_stream
from .texts import EvaluationText
from .windows import sliding_windows

EVALUATED_BACKENDS = ("torch", "onnx")
MIN_WINDOW = 2  # a window scores its tokens after the first: two tokens at least


@dataclass(frozen=True)
class Target:
    """What to evaluate: a model (None: the registry's own) on a backend; `variant` is the ONNX variant (torch: None)."""

    model: str | None = None
    backend: str = "torch"
    variant: str | None = None


def targets_of(models: list[str | None], backends: list[str], variants: list[str]) -> list[Target]:
    """Every model on every backend, ONNX in every variant (torch has none), each once, in the order given."""
    targets = [Target(model, backend, None if backend == "torch" else variant)
               for model in models or [None] for backend in backends or ["torch"]
               for variant in (variants or ["fp32"] if backend != "torch" else [None])]
    return list(dict.fromkeys(targets))


@dataclass
class Evaluation:
    """The numbers of one evaluation, as saved in the history's `evaluations` table (with owner and machine there)."""

    model: str
    model_sha256: str | None  # content hash of its config and weights (registry.model_fingerprint); None if unreadable
    backend: str
    variant: str
    provider: str
    data_name: str
    data_sha256: str
    window: int
    stride: int
    tokens: int  # tokens scored
    text_tokens: int  # tokens of the text (the start token left out): all of them are scored when stride < window
    bytes: int  # UTF-8 bytes of the text
    nll_nats: float  # sum over the scored tokens of -ln p
    perplexity: float
    bits_per_byte: float
    kl_to_fp32: float | None  # mean per scored token of KL(fp32 || this), in nats; None for fp32 itself and torch
    seconds: float
    tokens_per_s: float
    # lm-evaluation-harness tasks run on the same backend (harness.run_tasks): {task: {"acc": ..., "acc_stderr": ...,
    # "acc_norm": ..., "acc_norm_stderr": ..., "samples": n}}; None when no task was asked for.
    tasks: dict[str, dict[str, float]] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def check_window(window, stride, context: int, model: str) -> tuple[int, int]:
    """(window, stride) as given or by default, a window of the model's context and a stride of half a window (the
    guide's 1024 and 512 for GPT-2); a window beyond the context or a stride beyond the window is refused."""
    window = context if window in (None, "") else as_int("window", window)
    if not MIN_WINDOW <= window <= context:
        raise PlaygroundError(key="evaluate.window_range", field="window", window=window, least=MIN_WINDOW, context=context,
                              model=model)
    stride = max(1, window // 2) if stride in (None, "") else as_int("stride", stride)
    if not 1 <= stride <= window:
        raise PlaygroundError(key="evaluate.stride_range", field="stride", stride=stride, window=window)
    return window, stride


def stream_ids(text: EvaluationText, codec) -> list[int]:
    """The text's tokens after the model's start token (<|endoftext|> for GPT-2's BPE, [CLS] for a BertTokenizer), so
    that the text's first token is scored too, as the model sees a text begin in generation."""
    ids = codec.tokenizer(text.text, add_special_tokens=False, verbose=False)["input_ids"]
    return [codec.start_id, *ids]


@dataclass
class Plan:
    """A target checked and its text tokenized, before any weights load or an export runs."""

    registry: ModelRegistry  # where the model and its backends come from
    target: Target
    model: str  # the model's name in the registry
    window: int
    stride: int
    ids: list[int]  # the start token, then the text's tokens
    tasks: tuple[TaskSpec, ...] = ()  # lm-eval tasks to run on the same backend (harness.resolve_tasks)


def plan_evaluation(registry: ModelRegistry, target: Target, text: EvaluationText, window=None, stride=None,
                    tasks: list[TaskSpec] = ()) -> Plan:
    """Check what `evaluate` would do, from the model's config and tokenizer only: the model may be chosen, the window
    and stride fit it, and the text fills one window (a perplexity over less would not be the sliding-window one)."""
    if target.backend not in EVALUATED_BACKENDS:  # a serving engine gives no logits of a whole text
        raise PlaygroundError(key="backend.unknown", field="backend", name=target.backend, available=", ".join(EVALUATED_BACKENDS))
    if target.variant is not None and target.variant not in VARIANTS:
        raise PlaygroundError(key="variant.unknown", field="variant", name=target.variant, available=", ".join(VARIANTS))
    source = registry.source_for(target.model)
    window, stride = check_window(window, stride, registry.context_length(source.name), source.name)
    ids = stream_ids(text, source.codec)
    if len(ids) < window:
        raise PlaygroundError(key="evaluate.too_short", field="data", name=text.name, tokens=len(ids), model=source.name,
                              window=window)
    return Plan(registry, target, source.name, window, stride, ids, tuple(tasks))


def evaluate(plan: Plan, text: EvaluationText,
             on_window: Callable[[int, int], None] | None = None) -> Evaluation:
    """Score `text` as `plan` says by the sliding-window method (windows.sliding_windows) through the backend's
    `prefill`, and, for an ONNX variant other than fp32, against the ONNX fp32 export of the same model.

    perplexity = exp(nll / tokens), over the scored tokens. bits_per_byte: the text's total negative log-likelihood in
    bits over its UTF-8 bytes, sum_i -log2 p(x_i | x_<i) / bytes(text), which does not depend on how a tokenizer cuts
    the text, so GPT-2's BPE and a Chinese BertTokenizer compare on one scale. With stride < window every token of the
    text is scored (after the start token), so that is exact. With stride == window the first token of each window
    after the first has no context and is not scored (as in the guide): the sum then counts each of the text's tokens
    at the scored tokens' mean, nll / ln 2 * text_tokens / tokens / bytes. A BertTokenizer drops whitespace and maps
    characters outside its vocabulary to [UNK], so its bits per byte leaves their cost out: a lower bound.
    `on_window(done, total)` after each window. Then the plan's lm-eval tasks, if any, on the same backend.
    """
    target, registry = plan.target, plan.registry
    backend = registry.analysis_backend(target.backend, target.variant, plan.model, need="logits")
    info = backend.info
    reference = None
    if info.backend == "onnx" and info.variant != "fp32":
        reference = registry.analysis_backend("onnx", "fp32", plan.model, need="logits")
    windows = sliding_windows(len(plan.ids), plan.window, plan.stride)
    scores = score_stream(backend, plan.ids, windows, reference,
                          on_window=(lambda i: on_window(i + 1, len(windows))) if on_window else None)
    tasks = run_tasks(backend, registry.source_for(plan.model), list(plan.tasks)) if plan.tasks else None
    text_tokens = len(plan.ids) - 1
    nll_bits = scores.nll_nats / math.log(2)
    return Evaluation(
        model=plan.model, model_sha256=registry.model_fingerprint(plan.model), backend=info.backend, variant=info.variant,
        provider=info.provider, data_name=text.name, data_sha256=text.sha256, window=plan.window, stride=plan.stride,
        tokens=scores.tokens, text_tokens=text_tokens, bytes=text.bytes, nll_nats=scores.nll_nats,
        perplexity=math.exp(scores.nll_nats / scores.tokens),
        bits_per_byte=nll_bits * text_tokens / scores.tokens / text.bytes,
        kl_to_fp32=scores.kl_nats / scores.tokens if scores.kl_nats is not None else None,
        seconds=scores.seconds, tokens_per_s=scores.tokens / scores.seconds if scores.seconds > 0 else float("nan"),
        tasks=tasks)


def plan_all(registry: ModelRegistry, targets: list[Target], text: EvaluationText, window=None, stride=None,
             tasks: list[TaskSpec] = ()) -> list[Plan]:
    """`plan_evaluation` of every target, each with the same `tasks`: a bad one is refused before anything runs."""
    if not targets:
        raise PlaygroundError(key="evaluate.no_targets", field="model")
    return [plan_evaluation(registry, target, text, window, stride, tasks) for target in targets]


def evaluate_all(plans: list[Plan], text: EvaluationText, history: HistoryStore | None = None, owner: str = LOCAL_OWNER,
                 on_progress: Callable[[int, int, Plan], None] | None = None) -> list[Evaluation]:
    """`evaluate` each plan on the one text, in order: one table. Each result is saved to `history` as `owner`'s as
    soon as it is done, with this machine's description. `on_progress(done, total, plan)` after each window."""
    machine = machine_description() if history is not None else None
    results = []
    for plan in plans:
        on_window = (lambda done, total, plan=plan: on_progress(done, total, plan)) if on_progress else None
        result = evaluate(plan, text, on_window)
        if history is not None:
            history.save_evaluation(result.to_dict(), machine, owner=owner)
        results.append(result)
    return results
