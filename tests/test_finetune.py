"""Fine-tuning on the tiny real models: full and LoRA, data checks and encodings, cancel, the one-job rule, jobs in SQLite, the CLI."""

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from playground.errors import DataError, ModelLoadError, PlaygroundError, SettingsError, TrainingCancelled
from playground.history import HistoryStore
from playground.models import ModelSource, list_local_models, resolve_model
from playground.finetune.data import MAX_DATA_BYTES, csv_columns, decode_bytes, from_text, prepare_data, read_file
from playground.finetune.checkpoints import resumable_jobs
from playground.finetune.run import FineTuneSettings, plan_finetune, run_finetune
from playground.finetune.jobs import FineTuneJobs

GPL3 = Path("/usr/share/common-licenses/GPL-3")  # Debian's base-files: legal English, a style the tiny model never saw
FAST = dict(block_size=32, batch_size=8, warmup_steps=2, eval_every=5)
ZH_TEXT = "床前明月光，疑是地上霜。举头望明月，低头思故乡。"


@pytest.fixture(scope="module")
def legal_text() -> str:
    return GPL3.read_text(encoding="utf-8")[:12_000]


def model_folders(root: Path) -> list[str]:
    """Everything in the models folder, hidden entries too: a cancelled or failed run must leave nothing."""
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


# --- training -----------------------------------------------------------------------------------


def test_full_finetune_lowers_validation_loss_and_writes_a_standard_model(tiny_source, legal_text, tmp_path):
    updates = []
    report = run_finetune(tiny_source, legal_text, FineTuneSettings(learning_rate=3e-3, max_steps=30, **FAST), "legal", tmp_path,
                          progress=updates.append)
    assert report["val_loss_after"] < report["val_loss_before"] - 0.3
    assert report["val_perplexity_after"] < report["val_perplexity_before"]
    folder = tmp_path / "legal"
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "training_report.json"} <= {
        p.name for p in folder.iterdir()}
    assert list_local_models(tmp_path) == ["legal"]
    saved = json.loads((folder / "training_report.json").read_text(encoding="utf-8"))
    assert saved["base_model"]["name"] == tiny_source.name and len(saved["base_model"]["sha256"]) == 64
    assert len(saved["data"]["sha256"]) == 64 and saved["settings"]["learning_rate"] == 3e-3
    assert len(saved["loss_curve"]["train"]) == 30 and saved["loss_curve"]["val"][0][0] == 0
    assert {"cpu", "cores", "device", "versions"} <= set(saved["machine"]) and saved["machine"]["device"] == "cpu"
    # Progress: phases in order, every step reported with the curve so far.
    phases = [u["phase"] for u in updates]
    assert phases[0] == "loading" and phases[-1] == "complete" and "saving" in phases
    steps = [u for u in updates if u["phase"] == "training" and u["step"] > 0]
    assert list(dict.fromkeys(u["step"] for u in steps)) == list(range(1, 31))  # a checkpoint is one more update of its step
    assert [u["step"] for u in steps if u["checkpoint_step"] == u["step"]] == [5, 10, 15, 20, 25]
    last = steps[-1]
    assert last["total_steps"] == 30 and len(last["train_losses"]) == 30 and last["eta_s"] == 0 and last["tokens_per_s"] > 0
    assert math.isfinite(last["val_loss"]) and last["val_perplexity_before"] == pytest.approx(saved["val_perplexity_before"], rel=1e-3)
    # The new folder is a model like any other.
    from playground.backends.torch import TorchBackend

    TorchBackend(resolve_model(str(folder)), device="cpu")


def test_a_run_that_overfits_keeps_its_best_weights_and_says_so(tiny_source, legal_text, tmp_path):
    """Four validation blocks of text and a high rate: validation loss falls, then rises for the last 20 steps. The model
    saved is the one from the best evaluation (it scores the best validation loss exactly), and the report says so."""
    from playground.finetune.run import kept_best_text

    settings = FineTuneSettings(learning_rate=3e-2, max_steps=60, block_size=32, batch_size=8, warmup_steps=2, eval_every=5)
    report = run_finetune(tiny_source, legal_text[:2500], settings, "overfit", tmp_path)
    curve = dict(report["loss_curve"]["val"])
    best_step = min(curve, key=curve.get)
    kept = report["kept_best"]
    assert 0 < best_step < 60 and kept["step"] == best_step and kept["last_step"] == 60 and kept["overfit"], curve
    assert report["val_loss_after"] == pytest.approx(curve[best_step], abs=1e-5)  # the saved weights are step best_step's
    assert kept["last_val_perplexity"] >= 1.05 * kept["val_perplexity"]
    assert f"step {best_step}" in kept_best_text(kept, "en") and "fewer steps" in kept_best_text(kept, "en")
    assert f"第 {best_step} 步" in kept_best_text(kept, "zh-CN") and "过拟合" in kept_best_text(kept, "zh-CN")
    # A run whose last evaluation is its best keeps its last weights and has nothing to say.
    calm = run_finetune(tiny_source, legal_text, FineTuneSettings(learning_rate=3e-3, max_steps=30, **FAST), "calm", tmp_path)
    assert calm["kept_best"] is None


def test_early_stopping_ends_a_run_whose_validation_loss_stalls_and_keeps_the_best(tiny_source, legal_text, tmp_path):
    """The overfitting run above, with patience 2: it stops two evaluations after its best, keeps that model, and says so."""
    from playground.finetune.run import stopped_early_text

    settings = FineTuneSettings(learning_rate=3e-2, max_steps=60, block_size=32, batch_size=8, warmup_steps=2, eval_every=5,
                                early_stopping_patience=2, early_stopping_min_delta=0.01)
    report = run_finetune(tiny_source, legal_text[:2500], settings, "stopped", tmp_path)
    curve = report["loss_curve"]["val"]
    stopped = report["stopped_early"]
    assert stopped is not None and stopped["step"] < 60 and report["steps"] == stopped["step"] == curve[-1][0], curve
    # The last two evaluations did not beat the best before them by more than 0.01; every earlier one of the run went on.
    best_before = min(loss for _, loss in curve[:-2])
    assert all(loss >= best_before - 0.01 for _, loss in curve[-2:])
    assert len(report["loss_curve"]["train"]) == stopped["step"] and report["planned_steps"] == 60
    best_step = min(dict(curve), key=dict(curve).get)
    assert report["val_loss_after"] == pytest.approx(dict(curve)[best_step], abs=1e-5)  # the best weights are saved
    assert f"step {stopped['step']} of 60" in stopped_early_text(stopped, "en")
    assert f"第 {stopped['step']} 步" in stopped_early_text(stopped, "zh-CN")
    with pytest.raises(SettingsError, match="early_stopping_patience"):
        FineTuneSettings(early_stopping_patience=-1).validate()


def test_a_test_split_is_held_out_from_training_and_validation_and_scored_before_and_after(tiny_source, legal_text, tmp_path):
    from playground.finetune.run import test_text

    plain = prepare_data(from_text(legal_text), tiny_source.codec, 32, seed=3)
    split = prepare_data(from_text(legal_text), tiny_source.codec, 32, seed=3, test_fraction=0.1)
    assert torch.equal(plain.val_blocks, split.val_blocks)  # validation is the same with or without a test split
    assert plain.test_blocks is None and split.stats["test_blocks"] == len(split.test_blocks) >= 1
    seen = {tuple(b.tolist()) for b in [*split.train_blocks, *split.val_blocks]}
    assert not any(tuple(b.tolist()) in seen for b in split.test_blocks)  # never trained on, never validated on
    assert len(split.train_blocks) == len(plain.train_blocks) - len(split.test_blocks)
    settings = FineTuneSettings(learning_rate=3e-3, max_steps=20, test_fraction=0.1, **FAST)
    report = run_finetune(tiny_source, legal_text, settings, "tested", tmp_path)
    test = report["test"]
    assert test["blocks"] == len(split.test_blocks) and test["perplexity_after"] < test["perplexity_before"]
    assert "Test split" in test_text(test, "en") and "测试集" in test_text(test, "zh-CN")
    # The shortest text that trains (one block to train on, one to validate on) has none left for a test.
    chars = next(n for n in range(40, 2000, 10) if _prepares(legal_text[:n], tiny_source.codec))
    with pytest.raises(DataError) as short:
        prepare_data(from_text(legal_text[:chars]), tiny_source.codec, 32, test_fraction=0.5)
    assert short.value.key == "data.too_short_for_test"


def _prepares(text: str, codec) -> bool:
    try:
        prepare_data(from_text(text), codec, 32)
        return True
    except DataError:
        return False


def test_lora_is_merged_into_plain_safetensors_that_export_to_onnx_and_match_pytorch(tiny_source, legal_text, tmp_path):
    from safetensors import safe_open

    from playground.backends.onnx import OnnxBackend
    from playground.backends.torch import TorchBackend

    report = run_finetune(tiny_source, legal_text, FineTuneSettings(method="lora", learning_rate=1e-2, max_steps=20, lora_rank=4,
                                                                    **FAST), "legal-lora", tmp_path / "models")
    folder = tmp_path / "models" / "legal-lora"
    assert not list(folder.glob("adapter*")), "LoRA adapters must be merged, not saved beside the model"
    with safe_open(folder / "model.safetensors", "pt") as merged, safe_open(Path(tiny_source.location) / "model.safetensors", "pt") as base:
        assert not [k for k in merged.keys() if "lora" in k]
        assert set(merged.keys()) == set(base.keys())
        changed = [k for k in merged.keys() if not torch.equal(merged.get_tensor(k), base.get_tensor(k))]
    assert changed and all(".c_attn." in k or ".c_proj." in k for k in changed)  # only the adapted layers moved
    assert report["trainable_parameters"] < report["parameters"] / 10
    assert report["val_loss_after"] < report["val_loss_before"]

    source = resolve_model(str(folder))
    torch_backend = TorchBackend(source, device="cpu")
    onnx_backend = OnnxBackend(source, "fp32", device="cpu", exports_root=tmp_path / "exports", progress=False)
    ids = source.tokenizer("This License applies to any program or other work")["input_ids"]
    t_logits, _ = torch_backend.prefill(ids)
    o_logits, _ = onnx_backend.prefill(ids)
    assert torch.allclose(t_logits, o_logits, atol=1e-4), float((t_logits - o_logits).abs().max())


def test_cancel_stops_within_a_step_and_leaves_no_model_but_a_checkpoint(tiny_source, legal_text, tmp_path):
    cancel = threading.Event()
    steps = []

    def progress(update):
        if update["step"]:
            steps.append(update["step"])
        if update["step"] == 2:
            cancel.set()

    with pytest.raises(TrainingCancelled):
        run_finetune(tiny_source, legal_text, FineTuneSettings(max_steps=50, **FAST), "never", tmp_path, progress=progress, cancel=cancel)
    assert max(steps) == 2
    assert model_folders(tmp_path) == [".finetune"] and resumable_jobs(tmp_path)[0]["step"] == 2


def test_a_bert_tokenizer_model_fine_tunes_on_a_gbk_file(tiny_zh_bin_dir, tmp_path):
    from playground.training.corpus_zh import load_zh_texts

    texts = load_zh_texts(12_000)
    data_file = tmp_path / "poems.txt"
    data_file.write_bytes("\n\n".join(texts + ["😀" * 40]).encode("gb18030"))  # the emoji is not in the vocabulary: [UNK]
    source = resolve_model(str(tiny_zh_bin_dir))
    training_text = read_file(data_file)
    assert training_text.encoding == "gb18030" and training_text.texts[0] == texts[0]
    report = run_finetune(source, training_text, FineTuneSettings(learning_rate=3e-3, max_steps=20, **FAST), "poems", tmp_path / "m")
    assert report["val_loss_after"] < report["val_loss_before"]
    assert report["data"]["encoding"] == "gb18030" and 0 < report["data"]["unk_fraction"] < 0.2
    tuned = resolve_model(str(tmp_path / "m" / "poems"))
    assert tuned.codec.wordpiece and tuned.tokenizer(ZH_TEXT)["input_ids"] == source.tokenizer(ZH_TEXT)["input_ids"]


def test_texts_are_wrapped_as_the_model_expects_and_short_ones_counted(tiny_source, tiny_zh_bin_dir):
    poems = [ZH_TEXT] * 12
    zh = resolve_model(str(tiny_zh_bin_dir)).codec
    prepared = prepare_data(from_text("\n".join(poems)), zh, block_size=16)
    stream = torch.cat([prepared.train_blocks.flatten(), prepared.val_blocks.flatten()]).tolist()
    assert zh.bos_id in stream and min(zh.eos_ids) in stream  # [CLS] text [SEP]
    assert prepared.stats["short_texts"] == 0 and prepared.stats["texts"] == 12
    english = prepare_data(from_text("\n\n".join(["A short line."] * 40)), tiny_source.codec, block_size=32)
    assert english.stats["short_texts"] == 40 and "none is dropped" in english.notices[0]
    assert english.train_blocks.shape[1] == 33 and english.stats["val_blocks"] >= 1
    assert min(tiny_source.codec.eos_ids) in english.train_blocks.flatten().tolist()  # <|endoftext|> between texts
    assert english.preview[0] == {"text": "A short line.", "chars": 13, "tokens": english.preview[0]["tokens"]}
    # Every token is a target once (blocks share one token), none dropped: the tail becomes one more block.
    assert english.stats["train_tokens"] + english.stats["val_tokens"] >= english.stats["tokens"] - 1


def test_the_validation_split_is_seeded(tiny_source, legal_text):
    a = prepare_data(from_text(legal_text), tiny_source.codec, 32, seed=1)
    b = prepare_data(from_text(legal_text), tiny_source.codec, 32, seed=1)
    c = prepare_data(from_text(legal_text), tiny_source.codec, 32, seed=2)
    assert torch.equal(a.val_blocks, b.val_blocks) and not torch.equal(a.val_blocks, c.val_blocks)


def test_the_validation_split_holds_several_blocks_when_the_text_allows(tiny_source, legal_text):
    few = prepare_data(from_text(legal_text[:1300]), tiny_source.codec, 32)  # about 20 blocks: a tenth would be 2
    assert 16 <= few.stats["train_blocks"] + few.stats["val_blocks"] < 35
    assert few.stats["val_blocks"] == 4 and few.stats["val_tokens"] == 4 * 32
    tiny = prepare_data(from_text(legal_text[:400]), tiny_source.codec, 32)  # a handful: a quarter at most, at least one
    assert 1 <= tiny.stats["val_blocks"] <= max(1, (tiny.stats["train_blocks"] + tiny.stats["val_blocks"]) // 4)


def test_the_default_learning_rate_follows_the_models_size_and_is_what_the_plan_reports(tiny_source, legal_text, tmp_path):
    from transformers import AutoConfig, GPT2LMHeadModel

    from playground.finetune.run import DEFAULT_LEARNING_RATES, MAX_RATE_SCALE, default_learning_rate, gpt2_parameters

    config = AutoConfig.from_pretrained(tiny_source.location)
    parameters = gpt2_parameters(config)
    assert parameters == sum(p.numel() for p in GPT2LMHeadModel(config).parameters())
    assert default_learning_rate("full", 124_439_808) == 5e-5 and default_learning_rate("lora", 355_000_000) == 2e-4
    assert default_learning_rate("full", 2_170_560) == DEFAULT_LEARNING_RATES["full"] * MAX_RATE_SCALE == 1e-3
    for method in ("full", "lora"):
        plan = plan_finetune(tiny_source, legal_text, FineTuneSettings(method=method, **FAST), f"p-{method}", tmp_path)
        rate = default_learning_rate(method, parameters)
        assert plan.settings.learning_rate == plan.summary()["settings"]["learning_rate"] == rate
    chosen = plan_finetune(tiny_source, legal_text, FineTuneSettings(learning_rate=3e-4, **FAST), "chosen", tmp_path)
    assert chosen.summary()["settings"]["learning_rate"] == 3e-4  # a rate the user set is kept


# --- data files and encodings ---------------------------------------------------------------------


@pytest.mark.parametrize("encoding, bom", [("utf-8", b""), ("utf-8", b"\xef\xbb\xbf"), ("utf-16", b""), ("gbk", b""), ("big5", b"")])
def test_encodings_are_detected(encoding, bom, tmp_path):
    text = "床前明月光，疑是地上霜。\n舉頭望明月，低頭思故鄉。" if encoding == "big5" else "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。"
    path = tmp_path / "poem.txt"
    path.write_bytes(bom + text.encode(encoding))  # Python's utf-16 codec writes its own byte-order mark
    training_text = read_file(path)
    assert training_text.texts == tuple(text.split("\n"))
    assert training_text.sha256 == from_text(text).sha256  # the hash is of the text, not of its bytes


def test_jsonl_and_csv_columns(tmp_path):
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text('{"text": "first"}\n\n{"text": "second", "id": 2}\n', encoding="utf-8")
    assert read_file(jsonl).texts == ("first", "second")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"body": "no text field"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 2"):
        read_file(tmp_path / "bad.jsonl")
    table = tmp_path / "data.csv"
    table.write_text('id,body,lang\n1,"Hello, world",en\n2,"line one\nline two",en\n', encoding="utf-8")
    assert csv_columns(table) == ["id", "body", "lang"]
    assert read_file(table, "body").texts == ("Hello, world", "line one\nline two")
    with pytest.raises(DataError, match="several columns"):
        read_file(table)
    with pytest.raises(DataError, match="no column 'text'"):
        read_file(table, "text")


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("file_name, content, message", [
    ("empty.txt", b"  \n\n \t\n", "no text"),
    ("zero.txt", b"", "empty"),
    ("image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "binary"),
    ("damaged.txt", ("床前明月光" * 200).encode("utf-8")[:-1] + b"\n" + ("疑是地上霜" * 200).encode("utf-8"), "damaged"),
    ("noise.txt", bytes((i * 131 + 7) % 254 + 1 for i in range(4000)), "cannot be decoded"),
    ("table.xlsx", b"PK\x03\x04", "text file"),
])
def test_bad_data_files_are_refused_with_a_reason(file_name, content, message, tmp_path):
    with pytest.raises(DataError, match=message):
        read_file(_write(tmp_path / file_name, content))


def test_oversized_files_and_text_are_refused_before_reading(tmp_path):
    big = tmp_path / "big.txt"
    with open(big, "wb") as handle:
        handle.truncate(MAX_DATA_BYTES + 1)  # sparse: nothing is written, and nothing must be read
    with pytest.raises(DataError, match="limit is 20 MB"):
        read_file(big)
    with pytest.raises(DataError, match="limit is 20 MB"):
        from_text("a" * (MAX_DATA_BYTES + 1))


def test_too_short_data_names_the_block_size_that_would_fit(tiny_source, tmp_path):
    with pytest.raises(DataError, match="at most") as info:
        plan_finetune(tiny_source, "Just one short sentence.", FineTuneSettings(block_size=32), "short", tmp_path)
    assert info.value.key == "data.too_short"
    assert model_folders(tmp_path) == []


# --- names, settings, base models -----------------------------------------------------------------


@pytest.mark.parametrize("name, message", [
    ("../escape", "is a path"), ("sub/dir", "is a path"), ("/abs", "is a path"), ("..", "is a path"),
    (".hidden", "hidden"), ("", "Give the new model a name"), ("a b", "not a usable"), ("random-gpt2", "random-"),
])
def test_bad_model_names_are_refused(tiny_source, legal_text, tmp_path, name, message):
    with pytest.raises(PlaygroundError, match=message):
        plan_finetune(tiny_source, legal_text, FineTuneSettings(**FAST), name, tmp_path)


def test_a_taken_name_is_refused(tiny_source, legal_text, tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(PlaygroundError, match="already exists"):
        plan_finetune(tiny_source, legal_text, FineTuneSettings(**FAST), "taken", tmp_path)


@pytest.mark.parametrize("values, message", [
    ({"learning_rate": 0}, r"learning_rate=0.0 is out of range; allowed: \(0, 1\]"),
    ({"learning_rate": float("nan")}, "learning_rate must be a finite number; got nan"),
    ({"learning_rate": "fast"}, "learning_rate must be a number"),
    ({"method": "qlora"}, "use one of: full, lora"),
    ({"batch_size": 0}, r"batch_size=0 is out of range; allowed: \[1, 512\]"),
    ({"epochs": 2.5}, "epochs must be a whole number"),
    ({"lora_dropout": 1.0}, r"allowed: \[0, 1\)"),
    ({"lora_target_modules": ""}, "module names"),
    ({"learn_rate": 1e-3}, "Unknown fine-tuning setting"),
])
def test_bad_settings_name_the_value_and_what_is_allowed(values, message):
    with pytest.raises(SettingsError, match=message):
        FineTuneSettings.from_user(**values)


def test_settings_from_a_form_are_coerced_and_lora_targets_default_to_gpt2s():
    settings = FineTuneSettings.from_user(method="LoRA", learning_rate="3e-4", max_steps=100.0, lora_target_modules="c_attn, c_fc")
    assert settings.method == "lora" and settings.learning_rate == 3e-4 and settings.max_steps == 100
    assert settings.lora_target_modules == ("c_attn", "c_fc")
    assert FineTuneSettings().lora_target_modules == ("c_attn", "c_proj")
    assert FineTuneSettings(method="lora").effective_learning_rate == 2e-4


def test_block_size_must_fit_the_models_context(tiny_source, legal_text, tmp_path):
    with pytest.raises(SettingsError, match="context of 64 tokens"):
        plan_finetune(tiny_source, legal_text, FineTuneSettings(block_size=128), "big-block", tmp_path)


def test_a_base_that_is_not_gpt2_is_refused_before_its_weights_are_read(tiny_source, legal_text, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path / "tiny-llama"
    LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(folder)
    tiny_source.tokenizer.save_pretrained(folder)
    base = ModelSource(name="tiny-llama", location=str(folder), requested=str(folder))
    with pytest.raises(ModelLoadError, match="llama model; fine-tuning here works on GPT-2"):
        plan_finetune(base, legal_text, FineTuneSettings(**FAST), "from-llama", tmp_path / "models")


# --- jobs: one at a time, state in SQLite ---------------------------------------------------------


def test_one_job_at_a_time_and_its_progress_is_in_the_database(tiny_source, legal_text, tmp_path):
    store = HistoryStore(tmp_path / "history.db")
    jobs = FineTuneJobs(tmp_path / "models", store, write_interval_s=0.0)
    long_run = FineTuneSettings(max_steps=10_000, **FAST)
    job = jobs.start(tiny_source, legal_text, long_run, "long")
    assert job["status"] == "running" and job["plan"]["total_steps"] == 10_000
    try:
        with pytest.raises(PlaygroundError, match="already running"):
            jobs.start(tiny_source, legal_text, long_run, "second")
        with pytest.raises(PlaygroundError, match="already running"):  # another service object in the same app too
            FineTuneJobs(tmp_path / "models", store).start(tiny_source, legal_text, long_run, "third")
        # Another reader (a reloaded page) sees the running job's progress in the database.
        for _ in range(600):
            row = store.latest_job()
            if row["progress"].get("step", 0) >= 3:
                break
            threading.Event().wait(0.05)
        assert row["id"] == job["id"] and row["status"] == "running" and row["name"] == "long"
        assert row["progress"]["phase"] == "training" and len(row["progress"]["train_losses"]) >= 3
        assert row["settings"]["max_steps"] == 10_000
    finally:
        assert jobs.cancel()
        finished = jobs.wait(60)
    assert finished["status"] == "cancelled" and finished["error"]["key"].startswith("train.cancelled")
    from playground.ui.finetune_tab import job_error_text

    assert "no model was saved" in job_error_text(finished["error"], "en") and "没有保存模型" in job_error_text(finished["error"], "zh-CN")
    assert store.get_job(job["id"])["status"] == "cancelled"
    assert list_local_models(tmp_path / "models") == []

    # The slot is free again; a short job completes and leaves its report in the database.
    jobs.start(tiny_source, legal_text, FineTuneSettings(max_steps=3, **FAST), "short")
    done = jobs.wait(120)
    row = store.get_job(done["id"])
    assert row["status"] == "complete" and row["report"]["steps"] == 3 and row["progress"]["phase"] == "complete"
    assert list_local_models(tmp_path / "models") == ["short"]


def test_a_bad_input_is_refused_by_start_without_taking_the_slot(tiny_source, tmp_path):
    jobs = FineTuneJobs(tmp_path / "models", None)
    with pytest.raises(DataError):
        jobs.start(tiny_source, "too short", FineTuneSettings(**FAST), "x")
    assert not jobs.running and jobs.current() is None
    with pytest.raises(DataError):  # the slot was released: the same error, not "already running"
        jobs.start(tiny_source, "too short", FineTuneSettings(**FAST), "x")


def test_jobs_left_running_by_a_stopped_process_are_marked_interrupted(tmp_path):
    store = HistoryStore(tmp_path / "history.db")
    job_id = store.create_job("ghost", "demo-gpt2", {}, status="running")
    with store._write() as db:
        db.table("jobs").update(job_id, {"pid": 2**22 + 12345})  # above Linux's pid_max: no such process
    FineTuneJobs(tmp_path / "models", store)
    job = store.get_job(job_id)
    assert job["status"] == "error" and job["error"] == {"key": "finetune.interrupted", "params": {}}
    from playground.ui.finetune_tab import job_error_text

    assert job_error_text(job["error"], "en").startswith("Interrupted") and "中断" in job_error_text(job["error"], "zh-CN")


# --- the command line -----------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "playground.finetune", *args], capture_output=True, text=True, timeout=300,
                          env=os.environ | {"PYTHONIOENCODING": "utf-8"}, cwd=Path(__file__).resolve().parent.parent)


@pytest.mark.slow
def test_cli_fine_tunes_and_refuses_bad_input_in_one_line(tiny_model_dir, tmp_path):
    data = _write(tmp_path / "legal.txt", GPL3.read_bytes()[:12_000])
    result = run_cli("--model", str(tiny_model_dir), "--data", str(data), "--name", "cli-legal", "--models-dir", str(tmp_path / "m"),
                     "--method", "lora", "--lr", "1e-2", "--max-steps", "3", "--block-size", "32")
    assert result.returncode == 0, result.stderr
    assert "Validation perplexity" in result.stdout and (tmp_path / "m" / "cli-legal" / "model.safetensors").is_file()

    binary = _write(tmp_path / "binary.txt", b"\x00\x01\x02" * 100)
    result = run_cli("--model", str(tiny_model_dir), "--data", str(binary), "--name", "cli-bad", "--models-dir", str(tmp_path / "m"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: binary.txt looks binary") and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m" / "cli-bad").exists()


def test_decode_bytes_names_the_encoding():
    assert decode_bytes("naïve café".encode("cp1252")) == ("naïve café", "cp1252")
    assert decode_bytes("abc".encode("utf-8")) == ("abc", "utf-8")


def test_the_command_of_a_plan_runs_the_same_job_and_its_blocks_show_what_is_trained(tiny_source, legal_text, tmp_path):
    import shlex

    from playground.finetune.__main__ import SETTING_ARGS, build_parser
    from playground.ui.finetune_tab import preview_html

    settings = FineTuneSettings(method="lora", lora_rank=4, test_fraction=0.1, early_stopping_patience=2, **FAST)
    plan = plan_finetune(tiny_source, legal_text, settings, "again", tmp_path)
    command = plan.command()
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "playground.finetune"] and "DATA_FILE.txt" in words  # pasted text: a file to save
    args = build_parser().parse_args(words[3:])
    assert (args.model, args.name) == (tiny_source.requested, "again")
    assert FineTuneSettings.from_user(**{name: getattr(args, name) for name in SETTING_ARGS}) == plan.settings

    blocks = plan.summary()["blocks"]
    assert len(blocks) == 2 and [token["target"] for token in blocks[0]][:3] == [False, True, True]
    assert "".join(token["text"] for token in blocks[0]).startswith("GNU")
    html = preview_html(plan, "zh-CN")
    assert html.count("ft-ctx") == 2 and "在终端里重新运行这个任务的命令" in html and "DATA_FILE.txt" in html


def test_the_block_preview_marks_unknown_characters(tiny_zh_bin_dir, tmp_path):
    from playground.finetune.data import block_preview

    source = resolve_model(str(tiny_zh_bin_dir))
    prepared = prepare_data(from_text(("床前明月光，疑是地上霜。☃☃ " * 40)), source.codec, 16)
    tokens = [token for block in block_preview(prepared.train_blocks, source.codec) for token in block]
    assert any(token["unk"] for token in tokens) and not all(token["unk"] for token in tokens)


def test_a_test_file_of_the_users_is_scored_and_its_overlap_with_training_said(tiny_source, legal_text, tmp_path):
    held_out = from_text(GPL3.read_text(encoding="utf-8")[20_000:26_000], source="held-out.txt")
    plan = plan_finetune(tiny_source, legal_text, FineTuneSettings(**FAST), "with-test", tmp_path, test_data=held_out)
    assert plan.data.stats["test_source"] == "held-out.txt" and plan.data.stats["test_blocks"] >= 10
    assert not any(n.key == "data.test_overlap" for n in plan.notices)
    assert "--test-data held-out.txt" in plan.command()

    paragraphs = legal_text.split("\n\n")
    unseen = " ".join(GPL3.read_text(encoding="utf-8")[30_000:31_000].split())  # one paragraph the training text lacks
    overlapping = from_text("\n\n".join(paragraphs[:3] + [unseen]), source="mixed.txt")
    plan = plan_finetune(tiny_source, legal_text, FineTuneSettings(**FAST), "mixed", tmp_path, test_data=overlapping)
    notice = next(n for n in plan.notices if n.key == "data.test_overlap")
    assert notice.params["share"] == "75%" and "mixed.txt" in notice  # 3 of its 4 texts are training texts

    with pytest.raises(SettingsError, match="either a test file or a test split"):
        plan_finetune(tiny_source, legal_text, FineTuneSettings(test_fraction=0.1, **FAST), "both", tmp_path, test_data=held_out)
    with pytest.raises(DataError, match="fewer than one block"):
        plan_finetune(tiny_source, legal_text, FineTuneSettings(**FAST), "short", tmp_path, test_data=from_text("Too short.", "tiny.txt"))

    report = run_finetune(tiny_source, legal_text, FineTuneSettings(max_steps=3, **FAST), "tested", tmp_path, test_data=held_out)
    assert report["test"]["source"] == "held-out.txt" and report["test"]["blocks"] >= 10
    from playground.finetune.run import test_text

    assert test_text(report["test"], "zh-CN").startswith("测试文件 held-out.txt")
