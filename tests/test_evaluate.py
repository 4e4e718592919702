"""Evaluation (playground.evaluate) on the tiny real models: sliding-window perplexity against transformers' own loss,
bits per byte against its definition, ONNX against PyTorch, int8's KL to fp32, the command line, bad input, the
history's evaluations per owner, and the /evaluate API of a launched app."""

from __future__ import annotations

import json
import math
import sqlite3

import pytest
import torch

from playground.errors import PlaygroundError
from playground.evaluate import (Target, builtin_text, evaluate_all, from_file, from_pasted, plan_all, plan_evaluation,
                                 targets_of)
from playground.evaluate.__main__ import main
from playground.evaluate.windows import sliding_windows
from playground.history import HistoryStore, migrations
from playground.registry import ModelRegistry

WINDOW = 64  # the tiny models' context


@pytest.fixture(scope="module")
def registry(tiny_source, tiny_exports_root):
    return ModelRegistry(tiny_source, device="cpu", exports_root=tiny_exports_root)


@pytest.fixture(scope="module")
def english():
    """About 500 tokens of the English held-out set (unseen by the tiny model, which trained on a prefix of the corpus)."""
    return from_pasted(builtin_text("en").text[:2000], "held-out excerpt")


@pytest.fixture(scope="module")
def reference_model(tiny_model_dir):
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(tiny_model_dir).eval()


def guide_nll(model, ids: list[int], window: int, stride: int) -> tuple[float, int]:
    """(total NLL in nats, tokens scored) as transformers' perplexity guide computes them: windows every `stride`
    tokens, labels -100 where the previous window scored already, the model's own mean loss over its labels. The mean
    is weighted by the labels the shifted loss really averages over (the guide's `num_valid_tokens - batch_size`
    counts one too few in a window whose first label is -100)."""
    input_ids = torch.tensor([ids])
    seq_len, prev_end_loc, nll_sum, n_tokens = input_ids.size(1), 0, 0.0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + window, seq_len)
        trg_len = end_loc - prev_end_loc
        x = input_ids[:, begin_loc:end_loc]
        labels = x.clone()
        labels[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(x, labels=labels).loss
        scored = (labels[:, 1:] != -100).sum().item()
        nll_sum += loss.item() * scored
        n_tokens += scored
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return nll_sum, n_tokens


@pytest.mark.parametrize("window, stride", [(64, 32), (64, 64), (64, 17), (40, 40)])
def test_perplexity_equals_transformers_with_labels_over_the_same_windows(registry, english, reference_model, window, stride):
    [result] = evaluate_all(plan_all(registry, [Target()], english, window, stride), english)
    ids = [registry.source.codec.start_id] + registry.source.tokenizer(english.text, add_special_tokens=False)["input_ids"]
    nll, tokens = guide_nll(reference_model, ids, window, stride)
    assert result.tokens == tokens
    assert result.nll_nats == pytest.approx(nll, rel=1e-4)
    assert result.perplexity == pytest.approx(math.exp(nll / tokens), rel=1e-4)
    assert (result.window, result.stride, result.bytes) == (window, stride, len(english.text.encode("utf-8")))


@pytest.mark.parametrize("n_tokens, window, stride", [(500, 64, 32), (500, 64, 17), (64, 64, 32), (65, 64, 64), (1000, 64, 64)])
def test_windows_score_every_token_once_when_they_overlap(n_tokens, window, stride):
    windows = sliding_windows(n_tokens, window, stride)
    scored = [i for w in windows for i in range(w.first_scored, w.end)]
    assert all(w.end - w.begin <= window and w.first_scored > w.begin for w in windows)
    if stride < window or n_tokens <= window:
        assert scored == list(range(1, n_tokens))  # each token after the first, once, in order
    else:  # no overlap: a window's first token has no context
        assert scored == [i for i in range(1, n_tokens) if i % window]


def test_bits_per_byte_is_the_total_nll_in_bits_over_the_texts_utf8_bytes(registry, english, reference_model):
    """One forward pass of the whole text (it fits one window) gives sum -log2 p of every token after the start token."""
    short = from_pasted(english.text[:100])
    ids = [registry.source.codec.start_id] + registry.source.tokenizer(short.text, add_special_tokens=False)["input_ids"]
    assert len(ids) <= WINDOW
    with torch.no_grad():
        logits = reference_model(torch.tensor([ids])).logits[0]  # (T, V)
    bits = -torch.log_softmax(logits[:-1].double(), -1).gather(1, torch.tensor(ids[1:])[:, None]).sum().item() / math.log(2)
    [result] = evaluate_all(plan_all(registry, [Target()], short, window=len(ids)), short)
    assert result.tokens == result.text_tokens == len(ids) - 1
    assert result.bits_per_byte == pytest.approx(bits / len(short.text.encode("utf-8")), rel=1e-4)


def test_bits_per_byte_of_a_chinese_model_counts_bytes_not_characters(tiny_zh_demo_dir):
    """The BertTokenizer model: one token per character, three UTF-8 bytes per Han character."""
    from playground.models import resolve_model

    zh = ModelRegistry(resolve_model(str(tiny_zh_demo_dir)), device="cpu")
    text = from_pasted(builtin_text("zh").text[:400], "zh excerpt")
    [result] = evaluate_all(plan_all(zh, [Target()], text, stride=32), text)
    assert result.tokens == result.text_tokens  # stride < window: every token scored
    assert text.bytes > 2 * len(text.text)
    assert result.bits_per_byte == pytest.approx(result.nll_nats / math.log(2) / text.bytes, rel=1e-12)


def test_onnx_fp32_matches_pytorch_and_int8_costs_a_small_kl(registry, english):
    plans = plan_all(registry, targets_of([None], ["torch", "onnx"], ["fp32", "int8"]), english, stride=32)
    torch_row, fp32, int8 = evaluate_all(plans, english)
    assert [(r.backend, r.variant) for r in (torch_row, fp32, int8)] == [("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8")]
    assert fp32.perplexity == pytest.approx(torch_row.perplexity, rel=1e-4)
    assert fp32.bits_per_byte == pytest.approx(torch_row.bits_per_byte, rel=1e-4)
    assert torch_row.kl_to_fp32 is None and fp32.kl_to_fp32 is None
    assert 0 < int8.kl_to_fp32 < 0.05  # nats per token
    assert int8.perplexity == pytest.approx(fp32.perplexity, rel=0.05)
    assert int8.tokens == fp32.tokens and int8.model_sha256 == fp32.model_sha256 == registry.model_fingerprint()


def test_cli_prints_the_evaluations_as_json_and_saves_them(tiny_model_dir, english, tmp_path, capsys):
    data = tmp_path / "notes.txt"
    data.write_text(english.text, encoding="utf-8")
    db = tmp_path / "h.db"
    assert main(["--model", str(tiny_model_dir), "--data", str(data), "--stride", "32", "--device", "cpu", "--json",
                 "--db", str(db)]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert {"perplexity", "bits_per_byte", "tokens", "window", "stride", "bytes", "seconds", "tokens_per_s"} <= row.keys()
    assert (row["model"], row["window"], row["stride"], row["data_name"]) == ("tiny-gpt2", WINDOW, 32, "notes.txt")
    assert row["data_sha256"] == english.sha256  # the same text, pasted or from a file
    [saved] = HistoryStore(db).evaluations()
    assert saved["perplexity"] == row["perplexity"] and saved["owner"] == "" and saved["machine"]["cores"]


@pytest.mark.parametrize("content, args, message", [
    ("Too short.", [], "an evaluation needs at least one window of 64 tokens"),
    (b"\x00\x01binary\x00", [], "looks binary"),
    ("", [], "has no text to evaluate"),
    (None, ["--window", "65"], "window=65 is out of range for tiny-gpt2: allowed 2 to 64"),
    (None, ["--window", "32", "--stride", "33"], "stride=33 is out of range"),
])
def test_cli_refuses_bad_input_with_a_clear_message(tiny_model_dir, english, tmp_path, capsys, content, args, message):
    data = tmp_path / "data.txt"
    content = english.text if content is None else content
    data.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    assert main(["--model", str(tiny_model_dir), "--data", str(data), "--no-save", *args]) == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_an_unknown_model_and_an_unknown_builtin_set(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "no-such-model"), "--data", "builtin:en", "--no-save"]) == 2
    assert "no-such-model" in capsys.readouterr().err
    with pytest.raises(PlaygroundError, match="the built-in sets are builtin:en, builtin:zh"):
        builtin_text("builtin:fr")


def test_errors_have_a_chinese_message():
    from playground.ui.i18n import error_text

    with pytest.raises(PlaygroundError) as caught:
        from_pasted("   ")
    assert error_text(caught.value, "zh-CN") == "pasted text 中没有可评估的文本（为空或只有空白）。"


def test_a_bad_target_is_refused_before_anything_runs(registry, english):
    with pytest.raises(PlaygroundError, match="Unknown backend 'remote'"):
        plan_evaluation(registry, Target(backend="remote"), english)
    with pytest.raises(PlaygroundError, match="cannot be chosen here"):
        plan_all(registry, [Target(), Target(model="/etc")], english)


def test_an_evaluation_is_saved_as_its_owners_and_listed_to_them_only(registry, english, tmp_path):
    from playground.service import Playground

    store = HistoryStore(tmp_path / "h.db")
    plans = plan_all(registry, [Target()], english, stride=64)
    evaluate_all(plans, english, store, owner="alice")
    evaluate_all(plans, english, store, owner="bob")
    playground = Playground(registry.source, device="cpu", history=store, admins={"teacher"})
    mine = store.evaluations(owner=playground.viewer("alice"))
    assert [row["owner"] for row in mine] == ["alice"]
    assert (mine[0]["data_name"], mine[0]["data_sha256"], mine[0]["model_sha256"]) == (
        "held-out excerpt", english.sha256, registry.model_fingerprint())
    assert [row["owner"] for row in store.evaluations(owner=playground.viewer("teacher"))] == ["bob", "alice"]
    assert len(store.evaluations(owner=playground.viewer(None))) == 2  # the local user, without a login


def test_m012_adds_the_evaluations_table_to_an_older_history(tmp_path):
    from sqlite_utils import Database

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        migrations.apply(Database(conn), stop_before="m012_evaluations")
        conn.execute("INSERT INTO runs (created_at, prompt, status) VALUES ('2026-01-01', 'kept', 'complete')")
    store = HistoryStore(path)
    assert store.evaluations() == [] and [r["prompt"] for r in store.recent()] == ["kept"]


def test_a_file_of_records_is_scored_as_its_texts_joined(tmp_path):
    data = tmp_path / "records.jsonl"
    data.write_text('{"text": "first"}\n{"text": "second"}\n', encoding="utf-8")
    assert from_file(data).text == "first\n\nsecond"


def test_the_evaluate_api_of_a_launched_app(launched_app, english):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(launched_app, verbose=False)
    answer = client.predict(text=english.text, backends=["torch"], stride=32, api_name="/evaluate")
    [row] = answer["evaluations"]
    assert (row["model"], row["backend"], row["window"], row["stride"]) == ("tiny-gpt2", "torch", WINDOW, 32)
    assert row["data_sha256"] == english.sha256 and row["perplexity"] > 1
    with pytest.raises(AppError, match="an evaluation needs at least one window"):
        client.predict(text="Too short.", api_name="/evaluate")
