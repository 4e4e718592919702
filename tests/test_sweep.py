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


# ---- Strategies side by side ----------------------------------------------------------------------------------------

def test_distinct_1_and_perplexity_count_what_they_say():
    from playground.analysis.sweep import distinct_1
    from playground.records import BackendInfo, GenerationResult, TokenRecord

    assert distinct_1([[1, 2, 1, 2], [5, 6]]) == pytest.approx(4 / 6)  # tokens 1 2 5 6 distinct, of 6
    assert distinct_1([]) is None

    def result(probs):
        tokens = [TokenRecord(position=i, token_id=i % 2, text="x", is_prompt=False, raw_prob=p, prob=p, rank=1,
                              entropy_bits=1.0) for i, p in enumerate(probs)]
        return GenerationResult(prompt="", settings=GenerationSettings(), info=BackendInfo("m", "torch", "fp32", "cpu", 64),
                                tokens=tokens)

    metrics = cell_metrics([result([0.5, 0.25]), result([0.125, 1.0])])
    # Pooled over both samples: mean log p = (log 1/2 + log 1/4 + log 1/8 + log 1) / 4 = -6 log 2 / 4, perplexity 2^1.5.
    assert metrics["perplexity"] == pytest.approx(2 ** 1.5)
    assert metrics["mean_tokens"] == 2 and metrics["distinct_1"] == pytest.approx(2 / 4) and metrics["distinct_2"] == 1 / 2


@pytest.mark.parametrize("chosen, values, samples, tokens, message", [
    (["greedy", "sampling"], {}, 2, 8, "'sampling' is no strategy here"),
    ([], {}, 2, 8, "Choose at least one strategy"),
    (["beam"], {"beams": 1}, 2, 8, "Beam search needs 2 beams or more"),
    (["beam"], {"beams": 17}, 2, 8, r"num_beams=17 is out of range"),
    (["top_p"], {"top_p": 1.5}, 2, 8, r"top_p=1.5 is out of range"),
    (["top_k"], {"top_k": "many"}, 2, 8, "top_k must be a whole number"),
    (["contrastive"], {"alpha": 0}, 2, 8, "needs α"),
    (["contrastive"], {"contrastive_k": 1}, 2, 8, "top_k=1 is out of range"),
    (["temperature"], {"temperatures": "0.7, -1"}, 2, 8, "temperature=-1.0 is out of range"),
    (["greedy"], {"width": 3}, 2, 8, "Unknown strategy value width"),
    (["top_k", "top_p", "temperature"], {"temperatures": "0.5, 1, 1.5"}, 16, 64, f"the cap is {MAX_SWEEP_TOKENS}"),
])
def test_bad_strategies_are_refused_before_anything_runs(chosen, values, samples, tokens, message):
    from playground.analysis.sweep import plan_strategies

    with pytest.raises(SettingsError, match=message):
        plan_strategies(GenerationSettings(max_new_tokens=tokens), chosen, values, samples)


def test_strategies_side_by_side_are_the_runs_a_plain_run_makes(tiny_source, tmp_path):
    from playground.analysis.sweep import plan_strategies, run_strategies
    from playground.history import HistoryStore
    from playground.service import Playground

    store = HistoryStore(tmp_path / "history.db")
    playground = Playground(tiny_source, device="cpu", exports_root=tmp_path / "exports", history=store)
    plan = plan_strategies(GenerationSettings(max_new_tokens=6, seed=7, temperature=2.0, top_k=5),
                           ["temperature", "greedy", "contrastive", "beam", "top_p"],
                           {"beams": 3, "top_p": 0.8, "temperatures": "0.7", "contrastive_k": 3}, samples=2)
    assert [s.label() for s in plan.strategies] == ["greedy", "beam 3", "top-p 0.8", "contrastive (α 0.6, k 3)", "temperature 0.7"]
    assert [s.samples for s in plan.strategies] == [1, 1, 2, 1, 2]  # deterministic ones once, sampled ones N
    top_p = plan.strategies[2].settings  # the strategy's own settings, not the base's temperature and top-k
    assert (top_p.do_sample, top_p.temperature, top_p.top_k, top_p.top_p) == (True, 1.0, 0, 0.8)
    states = list(run_strategies(playground, PROMPT, plan, session="s"))
    state = states[-1]
    assert state.done and not state.stopped and len(state.columns) == 5 and len(states) == 6  # progress after every column
    assert len(store.group(state.group_id)) == 1 + 1 + 2 + 1 + 2
    for column in state.columns:  # one path: each column is what a plain run of its settings and seed gives
        plain = playground.start(PROMPT, column.strategy.settings, num_samples=column.strategy.samples)
        list(playground.stream_samples(plain))
        assert [r.text for r in column.results] == [r.text for r in plain.results], column.strategy.label()
        metrics = column.metrics
        assert metrics["perplexity"] == pytest.approx(math.exp(-metrics["mean_logprob"]))
        assert metrics["wall_ms"] > 0 and metrics["mean_tokens"] == sum(len(r.tokens) for r in column.results) / len(column.results)


def test_stop_keeps_the_finished_strategies(tiny_source, tmp_path):
    from playground.analysis.sweep import plan_strategies, run_strategies
    from playground.history import HistoryStore
    from playground.service import Playground

    store = HistoryStore(tmp_path / "history.db")
    playground = Playground(tiny_source, device="cpu", exports_root=tmp_path / "exports", history=store)
    plan = plan_strategies(GenerationSettings(max_new_tokens=6, seed=1), ["greedy", "top_k", "top_p"], {}, samples=2)
    stop = threading.Event()
    for state in run_strategies(playground, PROMPT, plan, session="s", stop_event=stop):
        if len(state.columns) == 2:
            stop.set()
    assert state.stopped and [c.strategy.kind for c in state.columns] == ["greedy", "top_k"]
    assert len(store.group(state.group_id)) == 1 + 2  # the finished columns' samples are in the history


def test_the_stated_strategy_cap_is_the_enforced_one():
    from playground.analysis.sweep import MAX_STRATEGIES
    from playground.ui.i18n import EN, ZH_CN

    for strings in (EN, ZH_CN):
        assert str(MAX_SWEEP_TOKENS) in strings["sweep.strategies_cap"] and str(MAX_STRATEGIES) in strings["sweep.strategies_cap"]
