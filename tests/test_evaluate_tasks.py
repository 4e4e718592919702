"""lm-evaluation-harness tasks (playground/evaluate/harness.py, lm.py) on the tiny real models: the adapter's
log-likelihoods against transformers' own loss (GPT-2's BPE and a BertTokenizer), a shipped task run by lm-eval's
evaluator against a direct argmax per item, greedy generation through the one decoding loop, the command line's JSON
and history, and every bad input with its message."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from playground.errors import PlaygroundError
from playground.evaluate import builtin_text, from_pasted
from playground.evaluate.__main__ import main
from playground.evaluate.harness import SHIPPED_TASKS, local_tasks, playground_lm, resolve_tasks, run_tasks
from playground.history import HistoryStore
from playground.models import resolve_model
from playground.registry import ModelRegistry

pytest.importorskip("lm_eval", reason='lm-eval is in the test extra: pip install -e ".[test]"')
from lm_eval.api.instance import Instance  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    from playground.machine import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def registry(tiny_source, tmp_path_factory):
    return ModelRegistry(tiny_source, device="cpu", exports_root=tmp_path_factory.mktemp("task-exports"))


@pytest.fixture(scope="module")
def lm(registry):
    return playground_lm(registry.analysis_backend("torch", need="logits"), registry.source)


def direct_loglikelihood(model, context_ids: list[int], continuation_ids: list[int]) -> float:
    """ln p(continuation | context) from transformers' mean loss over labels that are -100 on the context."""
    ids = torch.tensor([context_ids + continuation_ids])
    labels = ids.clone()
    labels[:, : len(context_ids)] = -100
    with torch.no_grad():
        loss = model(ids, labels=labels).loss.item()
    return -loss * len(continuation_ids)


def requests(kind: str, *pairs) -> list[Instance]:
    return [Instance(request_type=kind, doc={}, arguments=pair, idx=0) for pair in pairs]


PAIRS = [("The statement that leaves a loop early is", " break"), ("A function is defined with the keyword", " def"),
         ("A string is a sequence of ", "characters and more"), ("", "Assignment statements")]


def test_loglikelihood_equals_transformers_with_labels(lm, tiny_model_dir):
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(tiny_model_dir).eval()
    results = lm.loglikelihood(requests("loglikelihood", *PAIRS))
    for (context, continuation), (logprob, greedy) in zip(PAIRS, results):
        context_ids, continuation_ids = lm.continuation_ids(context, continuation)
        assert continuation_ids and isinstance(greedy, bool)
        assert logprob == pytest.approx(direct_loglikelihood(model, context_ids, continuation_ids), rel=1e-4)
    # The trailing space moves to the continuation, as lm-eval's HFLM cuts it: " characters" keeps its own token.
    assert lm.continuation_ids(*PAIRS[2]) == lm.continuation_ids(PAIRS[2][0].rstrip(), " " + PAIRS[2][1])


def test_loglikelihood_of_a_chinese_bert_tokenizer_model(tiny_zh_demo_dir):
    from transformers import GPT2LMHeadModel

    source = resolve_model(str(tiny_zh_demo_dir))
    zh = playground_lm(ModelRegistry(source, device="cpu").analysis_backend("torch", need="logits"), source)
    model = GPT2LMHeadModel.from_pretrained(tiny_zh_demo_dir).eval()
    pairs = [("中国的首都是", "北京"), ("春天过去以后是", "夏天")]
    for (context, continuation), (logprob, _) in zip(pairs, zh.loglikelihood(requests("loglikelihood", *pairs))):
        context_ids, continuation_ids = zh.continuation_ids(context, continuation)
        assert context_ids[0] == source.codec.start_id  # [CLS] first, as a prompt starts
        assert len(continuation_ids) == 2  # one token per character
        assert logprob == pytest.approx(direct_loglikelihood(model, context_ids, continuation_ids), rel=1e-4)


def test_rolling_loglikelihood_is_the_evaluate_tabs_sliding_window_nll(lm, registry):
    from playground.evaluate import Target, evaluate_all, plan_all

    text = from_pasted(builtin_text("en").text[:600], "excerpt")
    [rolling] = lm.loglikelihood_rolling(requests("loglikelihood_rolling", (text.text,)))
    [evaluation] = evaluate_all(plan_all(registry, [Target()], text), text)  # window 64, stride 32: the same windows
    assert rolling == pytest.approx(-evaluation.nll_nats, rel=1e-6)


def test_generate_until_is_the_playgrounds_greedy_run_cut_at_the_stop_string(lm, registry):
    from playground.config import GenerationSettings
    from playground.generation import generate

    [text] = lm.generate_until(requests("generate_until", ("The for statement", {"until": ["."], "max_gen_toks": 20})))
    greedy = generate(lm.backend, registry.source, "The for statement",
                      GenerationSettings(max_new_tokens=20, do_sample=False, top_alternatives=1, seed=0))
    assert "." not in text and greedy.text.startswith(text)
    assert text == greedy.text.split(".")[0]


def test_a_shipped_task_through_lm_evals_evaluator_matches_a_direct_argmax(lm, registry, tiny_model_dir):
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(tiny_model_dir).eval()
    [spec] = resolve_tasks(["python_mc_en"])
    numbers = run_tasks(lm.backend, registry.source, [spec])["python_mc_en"]
    items = [json.loads(line) for line in (SHIPPED_TASKS / "python_mc_en" / "python_mc_en.jsonl").read_text().splitlines()]
    right = right_norm = 0
    for item in items:
        scores = [direct_loglikelihood(model, *lm.continuation_ids(item["question"], " " + choice)) for choice in item["choices"]]
        right += max(range(len(scores)), key=scores.__getitem__) == item["answer"]
        normed = [s / len(c) for s, c in zip(scores, item["choices"])]  # lm-eval's acc_norm: per character of the choice
        right_norm += max(range(len(normed)), key=normed.__getitem__) == item["answer"]
    n = len(items)
    assert numbers["samples"] == n == 24
    assert numbers["acc"] == pytest.approx(right / n) and numbers["acc_norm"] == pytest.approx(right_norm / n)
    p = right / n
    assert numbers["acc_stderr"] == pytest.approx(math.sqrt(p * (1 - p) / (n - 1)))  # lm-eval's sample standard error


def test_cli_runs_a_task_folder_with_the_evaluation_and_saves_it(tiny_model_dir, tmp_path, capsys):
    folder = tmp_path / "my-tasks"
    folder.mkdir()
    shipped = (SHIPPED_TASKS / "python_mc_en" / "python_mc_en.yaml").read_text()
    (folder / "mine.yaml").write_text(shipped.replace("task: python_mc_en", "task: mine").replace("python_mc_en.jsonl", "data/mine.jsonl"))
    (folder / "data").mkdir()
    lines = (SHIPPED_TASKS / "python_mc_en" / "python_mc_en.jsonl").read_text().splitlines()[:6]
    (folder / "data" / "mine.jsonl").write_text("\n".join(lines) + "\n")
    data = tmp_path / "notes.txt"
    data.write_text(builtin_text("en").text[:600], encoding="utf-8")
    db = tmp_path / "h.db"
    assert main(["--model", str(tiny_model_dir), "--data", str(data), "--tasks", str(folder), "--device", "cpu", "--json",
                 "--db", str(db)]) == 0
    [row] = json.loads(capsys.readouterr().out)
    mine = row["tasks"]["mine"]
    assert mine["samples"] == 6 and {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr"} <= mine.keys()
    [saved] = HistoryStore(db).evaluations()
    assert saved["tasks"] == row["tasks"] and saved["perplexity"] == row["perplexity"]
    png = tmp_path / "bars.png"
    assert main(["--model", str(tiny_model_dir), "--data", str(data), "--tasks", str(folder), "--device", "cpu", "--no-save",
                 "--png", str(png)]) == 0
    assert "mine acc_norm" in capsys.readouterr().out  # the text table: a column per task and metric
    assert png.read_bytes()[:4] == b"\x89PNG"  # bits per byte, and the task's accuracy beside it


def _task_folder(tmp_path, yaml_text: str, jsonl: str | None = '{"question": "q", "choices": ["a", "b"], "answer": 0}\n'):
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "t.yaml").write_text(yaml_text)
    if jsonl is not None:
        (folder / "t.jsonl").write_text(jsonl)
    return folder


GOOD_YAML = (SHIPPED_TASKS / "python_mc_en" / "python_mc_en.yaml").read_text().replace("python_mc_en", "t")


@pytest.mark.parametrize("yaml_text, jsonl, message", [
    ("task: t\ndoc_to_text: [unclosed\n", None, "The task file t.yaml does not read (line 3)"),
    ("just a string\n", None, "The task file t.yaml does not read"),
    ("dataset_path: json\n", None, "no `task:` name"),
    (GOOD_YAML, '{"question": "q", "choices": ["a"], "answer": 0}\n{"question": \n',
     "The task data t.jsonl does not read at line 2"),
    (GOOD_YAML, "[1, 2]\n", "line 1: not a JSON object"),
    (GOOD_YAML, None, "names the data file t.jsonl, which is not there"),
])
def test_a_malformed_task_folder_is_refused_with_the_file_and_line(tmp_path, yaml_text, jsonl, message):
    with pytest.raises(PlaygroundError, match=message.replace("(", r"\(").replace(")", r"\)")):
        local_tasks(_task_folder(tmp_path, yaml_text, jsonl))


def test_bad_task_names_are_refused_in_both_languages(tmp_path, capsys, tiny_model_dir):
    from playground.ui.i18n import error_text

    with pytest.raises(PlaygroundError) as missing:
        resolve_tasks([str(tmp_path / "no-such-folder")])
    assert "There is no task folder" in str(missing.value) and "没有任务文件夹" in error_text(missing.value, "zh-CN")
    with pytest.raises(PlaygroundError, match="no task file"):
        resolve_tasks([str(tmp_path)])
    with pytest.raises(PlaygroundError) as offline:  # the tests run with HF_HUB_OFFLINE=1 and the network blocked
        resolve_tasks(["hellaswag"])
    assert "cannot be reached" in str(offline.value) and "python_mc_en" in str(offline.value)
    assert "连不上" in error_text(offline.value, "zh-CN")
    with pytest.raises(PlaygroundError, match="not a task that can be chosen here"):  # the app takes no server paths
        resolve_tasks(["/etc"], folders=False)
    with pytest.raises(PlaygroundError, match="cannot be reached"):  # a folder of the working directory is no task name
        resolve_tasks(["tests"], folders=False)
    assert main(["--model", str(tiny_model_dir), "--data", "builtin:en", "--tasks", str(tmp_path / "nope"), "--no-save"]) == 2
    assert "There is no task folder" in capsys.readouterr().err


def test_without_lm_eval_the_message_names_the_extra(monkeypatch):
    from playground.ui.i18n import error_text

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # what `import lm_eval` meets when the extra is not installed
    with pytest.raises(PlaygroundError) as caught:
        resolve_tasks(["python_mc_en"])
    assert 'pip install -e ".[tasks]"' in str(caught.value) and "tasks" in error_text(caught.value, "zh-CN")
    assert resolve_tasks([]) == []  # no task asked for: nothing needs lm-eval


def test_m016_gives_an_older_historys_evaluations_no_tasks(tmp_path):
    import sqlite3

    from sqlite_utils import Database

    from playground.history import migrations

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        migrations.apply(Database(conn), stop_before="m016_lmeval")
        conn.execute("INSERT INTO evaluations (created_utc, owner, model, perplexity) VALUES ('2026-12-05', '', 'old', 12.5)")
    [row] = HistoryStore(path).evaluations()
    assert (row["model"], row["perplexity"], row["tasks"]) == ("old", 12.5, None)


def test_the_evaluate_api_runs_tasks_by_name_only(launched_app):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(launched_app, verbose=False)
    answer = client.predict(text=builtin_text("en").text[:600], tasks=["python_mc_en"], api_name="/evaluate")
    [row] = answer["evaluations"]
    assert row["tasks"]["python_mc_en"]["samples"] == 24 and 0 <= row["tasks"]["python_mc_en"]["acc"] <= 1
    with pytest.raises(AppError, match="not a task that can be chosen here"):
        client.predict(text=builtin_text("en").text[:600], tasks=["/etc"], api_name="/evaluate")
