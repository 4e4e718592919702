"""Settings sweeps on a real tiny GPT-2: the grid's checks and cap, the per-cell numbers, history groups, Stop."""

import math
import threading

import pytest

from playground.config import GenerationSettings
from playground.errors import SettingsError
from playground.analysis.sweep import MAX_SWEEP_TOKENS, cell_metrics, distinct_2, plan_sweep, repetition_rate, run_sweep

PROMPT = "The value of the attribute is"


def test_distinct_2_and_repetition_rate_count_what_they_say():
    assert distinct_2([[1, 2, 1, 2], [5, 6]]) == pytest.approx(3 / 4)  # bigrams (1,2) (2,1) (1,2) (5,6): 3 distinct of 4
    assert repetition_rate([[1, 2, 1, 2], [5, 6]]) == pytest.approx(2 / 6)
    assert distinct_2([[3]]) is None and repetition_rate([]) is None


@pytest.mark.parametrize("x, xs, y, ys, samples, message", [
    ("temperature", "0.5, 1", "temperature", "1", 2, "two different settings"),
    ("seed", "1, 2", "top_p", "1", 2, "cannot be swept"),
    ("temperature", "0.5, -1", "top_p", "0.9", 2, "temperature=-1.0 is out of range"),
    ("temperature", "a", "top_p", "0.9", 2, "temperature must be a number"),
    ("temperature", "", "top_p", "0.9", 2, "Give 1 to 6 values"),
    ("temperature", "0.5, 1", "top_p", "0.9", 17, "num_return_sequences=17 is out of range"),
    ("temperature", "0.5,0.7,0.9,1.1,1.3,1.5", "top_p", "0.5,0.6,0.7,0.8,0.9,1", 8, f"the cap is {MAX_SWEEP_TOKENS}"),
])
def test_bad_sweeps_are_refused_before_anything_runs(x, xs, y, ys, samples, message):
    with pytest.raises(SettingsError, match=message):
        plan_sweep(GenerationSettings(max_new_tokens=16), x, xs, y, ys, samples)


def test_a_sweep_saves_every_sample_as_one_group_and_its_numbers_match_the_records(tiny_source, tmp_path):
    from playground.history import HistoryStore
    from playground.service import Playground

    store = HistoryStore(tmp_path / "history.db")
    playground = Playground(tiny_source, device="cpu", exports_root=tmp_path / "exports", history=store)
    plan = plan_sweep(GenerationSettings(max_new_tokens=8, seed=4), "temperature", "0.3, 1.5", "top_k", "0, 5", 2)
    states = list(run_sweep(playground, PROMPT, plan, session="s"))
    state = states[-1]
    assert state.done and not state.stopped and len(state.cells) == 4 and len(states) == 5  # progress after every cell
    rows = store.group(state.group_id, full=True)
    assert len(rows) == 4 * 2
    assert sorted((r["settings"]["temperature"], r["settings"]["top_k"], r["settings"]["seed"]) for r in rows) == sorted(
        (t, k, s) for t in (0.3, 1.5) for k in (0, 5) for s in (4, 5))
    cell = state.cells[0]
    logprobs = [math.log(t.raw_prob) for r in cell.results for t in r.tokens]
    assert cell.metrics["mean_logprob"] == pytest.approx(sum(logprobs) / len(logprobs))
    assert cell_metrics(cell.results) == cell.metrics
    grid = state.grid("mean_entropy_bits")
    assert len(grid) == 2 and len(grid[0]) == 2 and all(v is not None for row in grid for v in row)
    # Colder sampling finds likelier text: the 0.3 column beats the 1.5 column in mean log-prob at top-k off.
    assert state.grid("mean_logprob")[0][0] > state.grid("mean_logprob")[0][1]


def test_stop_keeps_the_finished_cells(tiny_source, tmp_path):
    from playground.history import HistoryStore
    from playground.service import Playground

    store = HistoryStore(tmp_path / "history.db")
    playground = Playground(tiny_source, device="cpu", exports_root=tmp_path / "exports", history=store)
    plan = plan_sweep(GenerationSettings(max_new_tokens=6, seed=1), "temperature", "0.5, 1", "top_p", "0.5, 1", 2)
    stop = threading.Event()
    for state in run_sweep(playground, PROMPT, plan, session="s", stop_event=stop):
        if len(state.cells) == 1:
            stop.set()
    assert state.stopped and len(state.cells) == 1
    assert len(store.group(state.group_id)) == 2  # the finished cell's samples are in the history


def test_the_stated_cap_is_the_enforced_one():
    from playground.analysis.sweep import MAX_VALUES_PER_AXIS
    from playground.ui.i18n import EN, ZH_CN

    for strings in (EN, ZH_CN):
        assert str(MAX_SWEEP_TOKENS) in strings["sweep.cap"] and str(MAX_VALUES_PER_AXIS) in strings["sweep.cap"]
