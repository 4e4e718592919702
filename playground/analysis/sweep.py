"""Settings sweeps: a grid over two generation settings, N samples per cell drawn as one batch, and what each cell's texts are like.

Every cell runs through the one decoding loop (`Playground.start(num_samples=N)`), so each sample is
an ordinary run in the history; all cells of a sweep share one group id. Per cell: the mean
log-probability per token (under the model's raw distribution, so cells at different temperatures
compare on one scale), the mean entropy (bits), distinct-2 (distinct token bigrams over all bigrams
of the cell's samples) and the repetition rate (share of generated tokens that repeat an earlier
token of the same sample).
"""

from __future__ import annotations

import math
import threading
import uuid
from dataclasses import dataclass, field, replace
from typing import Iterator

from ..config import GenerationSettings, as_float, as_int
from ..errors import SettingsError
from ..generation import check_num_samples
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


def distinct_2(token_ids: list[list[int]]) -> float | None:
    """Distinct bigrams over all bigrams, pooled over the samples (None when no sample has two tokens)."""
    bigrams = [tuple(ids[i:i + 2]) for ids in token_ids for i in range(len(ids) - 1)]
    return len(set(bigrams)) / len(bigrams) if bigrams else None


def repetition_rate(token_ids: list[list[int]]) -> float | None:
    """Share of tokens that repeat a token already generated earlier in the same sample."""
    total = sum(len(ids) for ids in token_ids)
    repeats = sum(len(ids) - len(set(ids)) for ids in token_ids)
    return repeats / total if total else None


def cell_metrics(results: list[GenerationResult]) -> dict:
    """The four numbers of a cell from its samples' token records."""
    records = [t for r in results for t in r.tokens]
    ids = [[t.token_id for t in r.tokens] for r in results]
    logprobs = [math.log(max(t.raw_prob, 1e-45)) for t in records if t.raw_prob is not None]
    entropies = [t.entropy_bits for t in records if t.entropy_bits is not None]
    return {
        "mean_logprob": sum(logprobs) / len(logprobs) if logprobs else None,
        "mean_entropy_bits": sum(entropies) / len(entropies) if entropies else None,
        "distinct_2": distinct_2(ids),
        "repetition_rate": repetition_rate(ids),
    }


@dataclass
class SweepCell:
    row: int
    column: int
    settings: GenerationSettings
    results: list[GenerationResult] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)


@dataclass
class SweepState:
    """A sweep as it stands: the cells finished so far (a stopped sweep keeps them), and its history group."""

    plan: SweepPlan
    group_id: str
    cells: list[SweepCell] = field(default_factory=list)
    stopped: bool = False

    @property
    def done(self) -> bool:
        return self.stopped or len(self.cells) == len(self.plan.cells)

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
        if stop_event.is_set():
            state.stopped = True
            yield state
            return
        settings = plan.settings_for(row, column)
        run = playground.start(prompt, settings, session=session, backend=backend, variant=variant, model=model,
                               num_samples=plan.samples, group_id=state.group_id, stop_event=stop_event, owner=owner)
        for _ in playground.stream_samples(run, session):
            pass
        if any(r.finish_reason == "stopped" for r in run.results):
            state.stopped = True
            yield state
            return
        state.cells.append(SweepCell(row, column, settings, run.results, cell_metrics(run.results)))
        yield state
