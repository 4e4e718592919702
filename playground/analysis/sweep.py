"""Settings sweeps: a grid over two generation settings, or decoding strategies side by side, and what their texts are like.

Two kinds of plan. A grid: N samples per cell drawn as one batch. Strategies: a list of named strategies (greedy,
beam B, top-k, top-p, typical, contrastive, temperature T), each a column; the sampled ones draw N samples, the
deterministic ones (greedy, beam search, contrastive search) one. Every cell or column runs through the one decoding
loop (`Playground.start(num_samples=N)`), so each sample is an ordinary run in the history; all of a sweep share one
group id. Per cell or column: the mean log-probability per token and the perplexity (under the model's raw
distribution, so texts made at different temperatures compare on one scale), the mean entropy (bits), distinct-1 and
distinct-2 (distinct tokens and token bigrams over all of them, pooled over the samples), the repetition rate (share
of generated tokens that repeat an earlier token of the same sample) and the mean length; a column also its wall time.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Iterator

from ..config import GenerationSettings, as_float, as_int
from ..errors import SettingsError
from ..generation import check_num_samples
from ..locales import text
from ..records import GenerationResult

# The settings a sweep can vary, and how their values are read.
AXES = {"temperature": as_float, "top_p": as_float, "top_k": as_int, "repetition_penalty": as_float,
        "typical_p": as_float, "no_repeat_ngram_size": as_int}
MAX_VALUES_PER_AXIS = 6
# Cells x samples x new tokens: 4096 tokens is about a minute of batched decoding of GPT-2 small on two CPU cores.
MAX_SWEEP_TOKENS = 4096
METRICS = ("mean_logprob", "mean_entropy_bits", "distinct_2", "repetition_rate")


@dataclass(frozen=True)
class SweepPlan:
    """A validated grid: `x` values across, `y` values down, `samples` per cell, from `base` settings."""

    base: GenerationSettings
    x_name: str
    x_values: tuple
    y_name: str
    y_values: tuple
    samples: int

    @property
    def cells(self) -> list[tuple[int, int]]:
        """(row, column) of every cell, row by row."""
        return [(r, c) for r in range(len(self.y_values)) for c in range(len(self.x_values))]

    def settings_for(self, row: int, column: int) -> GenerationSettings:
        return replace(self.base, **{self.x_name: self.x_values[column], self.y_name: self.y_values[row]}).validate()

    @property
    def total_tokens(self) -> int:
        return len(self.cells) * self.samples * self.base.max_new_tokens


def parse_values(name: str, text) -> tuple:
    """'0.5, 1, 1.5' (or a list) -> the setting's values, each checked against the setting's range."""
    if name not in AXES:
        raise SettingsError(key="sweep.axis", name=name,
                            axes=", ".join(AXES))
    items = [v for v in (text.replace(";", ",").split(",") if isinstance(text, str) else list(text or [])) if str(v).strip()]
    if not 1 <= len(items) <= MAX_VALUES_PER_AXIS:
        raise SettingsError(key="sweep.bad_values", name=name, most=MAX_VALUES_PER_AXIS, count=len(items))
    values = tuple(dict.fromkeys(AXES[name](name, v.strip() if isinstance(v, str) else v) for v in items))
    for value in values:
        replace(GenerationSettings(), **{name: value}).validate()  # the setting's own range check and message
    return values


def plan_sweep(base: GenerationSettings, x_name: str, x_values, y_name: str, y_values, samples) -> SweepPlan:
    """Check a sweep before anything runs: two different settings, values in range, a grid under the cap."""
    if x_name == y_name:
        raise SettingsError(key="sweep.same_axis", name=x_name)
    plan = SweepPlan(base.validate().with_seed(), x_name, parse_values(x_name, x_values), y_name, parse_values(y_name, y_values),
                     check_num_samples(samples))
    if plan.total_tokens > MAX_SWEEP_TOKENS:
        raise SettingsError(
            key="sweep.too_large", total=plan.total_tokens, cells=len(plan.cells), samples=plan.samples,
            tokens=base.max_new_tokens, cap=MAX_SWEEP_TOKENS)
    return plan


def distinct_n(token_ids: list[list[int]], n: int) -> float | None:
    """Distinct n-grams over all n-grams, pooled over the samples (Li et al. 2016's distinct-n; None when no sample has
    n tokens)."""
    ngrams = [tuple(ids[i:i + n]) for ids in token_ids for i in range(len(ids) - n + 1)]
    return len(set(ngrams)) / len(ngrams) if ngrams else None


def distinct_1(token_ids: list[list[int]]) -> float | None:
    """Distinct tokens over all tokens, pooled over the samples."""
    return distinct_n(token_ids, 1)


def distinct_2(token_ids: list[list[int]]) -> float | None:
    """Distinct bigrams over all bigrams, pooled over the samples (None when no sample has two tokens)."""
    return distinct_n(token_ids, 2)


def repetition_rate(token_ids: list[list[int]]) -> float | None:
    """Share of tokens that repeat a token already generated earlier in the same sample."""
    total = sum(len(ids) for ids in token_ids)
    repeats = sum(len(ids) - len(set(ids)) for ids in token_ids)
    return repeats / total if total else None


def cell_metrics(results: list[GenerationResult]) -> dict:
    """The numbers of a cell (or a strategy's column) from its samples' token records.

    perplexity = exp(-mean log p) over every generated token of every sample, p the model's raw probability of the
    chosen token (`raw_prob`): the pooled form of `GenerationResult.perplexity`."""
    records = [t for r in results for t in r.tokens]
    ids = [[t.token_id for t in r.tokens] for r in results]
    logprobs = [math.log(max(t.raw_prob, 1e-45)) for t in records if t.raw_prob is not None]
    entropies = [t.entropy_bits for t in records if t.entropy_bits is not None]
    mean_logprob = sum(logprobs) / len(logprobs) if logprobs else None
    return {
        "mean_logprob": mean_logprob,
        "perplexity": math.exp(-mean_logprob) if mean_logprob is not None else None,
        "mean_entropy_bits": sum(entropies) / len(entropies) if entropies else None,
        "distinct_1": distinct_1(ids),
        "distinct_2": distinct_2(ids),
        "repetition_rate": repetition_rate(ids),
        "mean_tokens": sum(len(i) for i in ids) / len(ids) if ids else None,
    }


@dataclass
class SweepCell:
    row: int
    column: int
    settings: GenerationSettings
    results: list[GenerationResult] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)


@dataclass
class SweepProgress:
    """What a running sweep of either kind shares: its plan, its history group, whether Stop ended it, and `counts`
    (cells or columns finished, planned)."""

    plan: object
    group_id: str
    stopped: bool = False

    @property
    def counts(self) -> tuple[int, int]:
        raise NotImplementedError

    @property
    def done(self) -> bool:
        finished, planned = self.counts
        return self.stopped or finished == planned


@dataclass
class SweepState(SweepProgress):
    """A sweep as it stands: the cells finished so far (a stopped sweep keeps them), and its history group."""

    cells: list[SweepCell] = field(default_factory=list)

    @property
    def counts(self) -> tuple[int, int]:
        return len(self.cells), len(self.plan.cells)

    def grid(self, metric: str) -> list[list[float | None]]:
        """The metric per cell as rows (y) of columns (x); None where a cell has not run."""
        grid = [[None] * len(self.plan.x_values) for _ in self.plan.y_values]
        for cell in self.cells:
            grid[cell.row][cell.column] = cell.metrics.get(metric)
        return grid


def run_sweep(playground, prompt: str, plan: SweepPlan, session: str | None = None, backend: str | None = None,
              variant: str | None = None, model: str | None = None,
              stop_event: threading.Event | None = None, owner: str = "") -> Iterator[SweepState]:
    """Run the cells in order, each as one batch of `plan.samples`; yield the state after each cell.

    Every sample is saved to the history with the sweep's group id. `stop_event` (also the session's
    Stop while a cell runs) ends the cell running now, keeps it as stopped in the history, and ends the
    sweep with the finished cells. Each cell's samples use the plan's seed + i, so a cell can be
    replayed alone. `owner`: the login the samples are saved under.
    """
    stop_event = stop_event or threading.Event()
    state = SweepState(plan, uuid.uuid4().hex[:16])
    yield state
    for row, column in plan.cells:
        settings = plan.settings_for(row, column)
        results = _run_one(playground, prompt, settings, plan.samples, state.group_id, session, backend, variant, model,
                           stop_event, owner)
        if results is None:
            state.stopped = True
            yield state
            return
        state.cells.append(SweepCell(row, column, settings, results, cell_metrics(results)))
        yield state


def _run_one(playground, prompt: str, settings: GenerationSettings, samples: int, group_id: str, session, backend, variant,
             model, stop_event: threading.Event, owner: str) -> list[GenerationResult] | None:
    """One cell or column: `samples` samples as one batch through the one decoding loop, saved to the history in the
    sweep's group; None when Stop came before or during it (a stopped batch is saved as stopped, and not kept)."""
    if stop_event.is_set():
        return None
    run = playground.start(prompt, settings, session=session, backend=backend, variant=variant, model=model,
                           num_samples=samples, group_id=group_id, stop_event=stop_event, owner=owner)
    for _ in playground.stream_samples(run, session):
        pass
    if any(r.finish_reason == "stopped" for r in run.results):
        return None
    return run.results


# ---- Strategies side by side ---------------------------------------------------------------------------------------

# The strategies one can choose, in the order their columns come. Each sets every setting that picks the tokens
# (STRATEGY_OFF, then its own values); the rest (length, seed, penalties, stop sequences) are the base settings'.
STRATEGIES = ("greedy", "beam", "top_k", "top_p", "typical", "contrastive", "temperature")
DETERMINISTIC = ("greedy", "beam", "contrastive")  # one sample each: the same text every time (a beam search its best)
STRATEGY_OFF = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "typical_p": 1.0, "num_beams": 1,
                "penalty_alpha": 0.0}
# The values a learner can edit, with the presets the tab starts from; each is read as the setting it becomes.
STRATEGY_VALUES = {"beams": ("num_beams", as_int, 4), "top_k": ("top_k", as_int, 40), "top_p": ("top_p", as_float, 0.9),
                   "typical_p": ("typical_p", as_float, 0.9), "alpha": ("penalty_alpha", as_float, 0.6),
                   "contrastive_k": ("top_k", as_int, 4), "temperatures": ("temperature", None, "0.7, 1.3")}
DEFAULT_STRATEGIES = ("greedy", "beam", "top_k", "top_p", "contrastive", "temperature")
MAX_STRATEGIES = 12  # columns: every strategy once and up to 6 temperatures
STRATEGY_METRICS = ("perplexity", "distinct_1", "distinct_2", "mean_tokens", "wall_ms", "ms_per_token", "mean_logprob",
                    "mean_entropy_bits", "repetition_rate")


@dataclass(frozen=True)
class Strategy:
    """One column: its kind, the values that name it (("beams", 4), ...), its settings and how many samples it draws."""

    kind: str
    values: tuple[tuple[str, object], ...]
    settings: GenerationSettings
    samples: int

    @property
    def rows(self) -> int:
        """Rows of the batch it decodes at each step: a beam per beam, a candidate per contrastive top_k, else a sample."""
        if self.kind == "beam":
            return self.settings.num_beams
        if self.kind == "contrastive":
            return self.settings.top_k
        return self.samples

    def label(self, lang: str = "en") -> str:
        """Its column's name in `lang`: "beam 4", "top-p 0.9", "contrastive (α 0.6, k 4)"."""
        return text(f"sweep.strategy.{self.kind}", lang, **{name: _number(v) for name, v in self.values})


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class StrategyPlan:
    """Validated strategies, one column each, in STRATEGIES order; `samples` is what a sampled one draws."""

    base: GenerationSettings
    strategies: tuple[Strategy, ...]
    samples: int

    @property
    def total_tokens(self) -> int:
        """Tokens decoded in all: rows of each column's batch x new tokens."""
        return sum(s.rows for s in self.strategies) * self.base.max_new_tokens


def strategy_values(values: dict | None = None) -> dict:
    """The presets, with whatever `values` (keys of STRATEGY_VALUES) the user changed."""
    chosen = {key: preset for key, (_, _, preset) in STRATEGY_VALUES.items()}
    unknown = sorted(set(values or {}) - set(chosen))
    if unknown:
        raise SettingsError(key="sweep.strategy_value", name=", ".join(unknown), known=", ".join(chosen))
    chosen.update({k: v for k, v in (values or {}).items() if v is not None and v != ""})
    return chosen


def _strategy(base: GenerationSettings, kind: str, samples: int, **values) -> Strategy:
    """A strategy's settings from the base settings: every setting that picks tokens set by it (STRATEGY_OFF otherwise)."""
    changes = dict(STRATEGY_OFF)
    named = []
    for key, value in values.items():
        setting_name, read, _ = STRATEGY_VALUES[key]
        value = read(setting_name, value) if read else value
        changes[setting_name] = value
        named.append((key, value))
    if kind in DETERMINISTIC:
        changes["do_sample"] = False
    if kind == "beam" and changes["num_beams"] < 2:  # 1 beam is greedy search
        raise SettingsError(key="sweep.beam_one", field="num_beams", value=changes["num_beams"])
    if kind == "contrastive" and changes["penalty_alpha"] == 0:  # no degeneration penalty: greedy over top_k
        raise SettingsError(key="sweep.alpha_zero", field="penalty_alpha")
    settings = replace(base, **changes).validate()  # the settings' own range checks and messages
    return Strategy(kind, tuple(named), settings, 1 if kind in DETERMINISTIC else samples)


def plan_strategies(base: GenerationSettings, chosen, values: dict | None = None, samples=1) -> StrategyPlan:
    """Check strategies side by side before anything runs: known strategies, their values in range, under the cap.

    `chosen`: names of STRATEGIES; `values`: the user's values by STRATEGY_VALUES key (the presets for the rest;
    "temperatures" a comma-separated list, one column each); `samples`: what each sampled strategy draws."""
    chosen = list(dict.fromkeys(chosen or []))
    unknown = [c for c in chosen if c not in STRATEGIES]
    if unknown:
        raise SettingsError(key="sweep.strategy_unknown", name=unknown[0], known=", ".join(STRATEGIES))
    if not chosen:
        raise SettingsError(key="sweep.no_strategy")
    base, samples, values = base.validate().with_seed(), check_num_samples(samples), strategy_values(values)
    strategies = []
    for kind in (k for k in STRATEGIES if k in chosen):
        if kind == "greedy":
            strategies.append(_strategy(base, kind, samples))
        elif kind == "beam":
            strategies.append(_strategy(base, kind, samples, beams=values["beams"]))
        elif kind in ("top_k", "top_p"):
            strategies.append(_strategy(base, kind, samples, **{kind: values[kind]}))
        elif kind == "typical":
            strategies.append(_strategy(base, kind, samples, typical_p=values["typical_p"]))
        elif kind == "contrastive":
            strategies.append(_strategy(base, kind, samples, alpha=values["alpha"], contrastive_k=values["contrastive_k"]))
        else:
            for temperature in parse_values("temperature", values["temperatures"]):
                strategies.append(_strategy(base, kind, samples, temperatures=temperature))
    if len(strategies) > MAX_STRATEGIES:
        raise SettingsError(key="sweep.too_many_strategies", count=len(strategies), most=MAX_STRATEGIES)
    plan = StrategyPlan(base, tuple(strategies), samples)
    if plan.total_tokens > MAX_SWEEP_TOKENS:
        raise SettingsError(key="sweep.strategies_too_large", total=plan.total_tokens, rows=sum(s.rows for s in strategies),
                            tokens=base.max_new_tokens, cap=MAX_SWEEP_TOKENS)
    return plan


@dataclass
class StrategyColumn:
    strategy: Strategy
    results: list[GenerationResult]
    metrics: dict


@dataclass
class StrategiesState(SweepProgress):
    """Strategies side by side as they stand: the columns finished so far (a stopped run keeps them), and the group."""

    columns: list[StrategyColumn] = field(default_factory=list)

    @property
    def counts(self) -> tuple[int, int]:
        return len(self.columns), len(self.plan.strategies)


def run_strategies(playground, prompt: str, plan: StrategyPlan, session: str | None = None, backend: str | None = None,
                   variant: str | None = None, model: str | None = None,
                   stop_event: threading.Event | None = None, owner: str = "") -> Iterator[StrategiesState]:
    """Run the strategies in order, each as one batch (a run of `strategy.samples` samples); yield the state after each.

    As `run_sweep`: every sample saved with the group id, Stop ends the column running now and keeps the finished
    ones. Each column also gets its wall time (`wall_ms`: start to saved, prefill included) and `ms_per_token`
    (wall time over the tokens it generated, all samples together).
    """
    stop_event = stop_event or threading.Event()
    state = StrategiesState(plan, uuid.uuid4().hex[:16])
    yield state
    for strategy in plan.strategies:
        started = time.perf_counter()
        results = _run_one(playground, prompt, strategy.settings, strategy.samples, state.group_id, session, backend, variant,
                           model, stop_event, owner)
        wall_ms = (time.perf_counter() - started) * 1000
        if results is None:
            state.stopped = True
            yield state
            return
        metrics = cell_metrics(results)
        tokens = sum(len(r.tokens) for r in results)
        metrics.update(wall_ms=wall_ms, ms_per_token=wall_ms / tokens if tokens else None)
        state.columns.append(StrategyColumn(strategy, results, metrics))
        yield state
