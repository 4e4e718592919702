"""The Fine-tune tab's handlers without a browser: uploads read and deleted, the form's settings, the rendered
views escaped, and every fine-tuning error translatable."""

import re
from pathlib import Path

import gradio as gr
import pytest

from playground.errors import DataError
from playground.finetune.run import FineTuneSettings, plan_finetune
from playground.errors import PlaygroundError
from playground.ui.finetune_tab import (SETTING_NAMES, held_out_data, loss_figure, preview_html, progress_html, read_upload,
                                        result_html, settings_from_form, training_data, upload_info_html, uploaded_text)
from playground.ui.i18n import EN, ZH_CN, error_text

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "playground"


def test_every_fine_tuning_error_key_has_both_languages():
    keys = set()
    for path in [*(PACKAGE_DIR / "finetune").glob("*.py"), *(PACKAGE_DIR / "training").glob("*.py")]:
        keys |= set(re.findall(r'key="((?:data|finetune|train)\.[a-z_]+)"', path.read_text()))
    assert keys and keys <= set(EN) and keys <= set(ZH_CN), sorted(keys - set(EN))


def test_the_upload_cap_the_tab_states_is_the_engines():
    from playground.finetune.data import MAX_DATA_BYTES

    for strings in (EN, ZH_CN):
        for key in ("finetune.upload", "finetune.upload_note"):
            assert f"{MAX_DATA_BYTES // 2**20} MB" in strings[key], key


def test_an_upload_is_read_then_deleted(tmp_path):
    folder = tmp_path / "0123abcd"
    folder.mkdir()
    path = folder / "notes.csv"
    path.write_text("title,body\nA,first text\nB,second text\n", encoding="utf-8")
    uploaded = read_upload(path)
    assert uploaded.columns == ("title", "body") and not path.exists() and not folder.exists()
    assert uploaded_text(uploaded, "body").texts == ("first text", "second text")


def test_a_file_the_server_has_not_read_is_an_error_not_the_pasted_text_in_its_place(tmp_path):
    """Check or Start clicked while the page shows a file whose upload event has not reached the server yet (or that
    was refused): said so in both languages, where before the pasted text (or none) was trained on instead."""
    path = write(tmp_path / "a" / "notes.txt", "a text the server has read. " * 20)
    uploaded = read_upload(path)  # (and deleted, with its folder)
    assert training_data("pasted", None, None, None) == "pasted"
    assert training_data("pasted", str(path), uploaded, None).texts[0].startswith("a text the server has read.")
    assert held_out_data(None, None, None) is None
    for pending in (lambda: training_data("pasted", str(path), None, None), lambda: held_out_data(str(path), None, None)):
        with pytest.raises(PlaygroundError) as caught:
            pending()
        assert caught.value.key == "finetune.upload_not_read" and "重新上传" in error_text(caught.value, "zh-CN")
    # Once read, the page says so under the file, in the reader's language, with the name escaped.
    odd = read_upload(write(tmp_path / "b" / "<b>.txt", "x" * 2048))
    assert upload_info_html(odd, "en") == "<div class='ft-upload-info'>Read &lt;b&gt;.txt (2.0 KB): Check and Start use it.</div>"
    assert "已读取 &lt;b&gt;.txt（2.0 KB）" in upload_info_html(odd, "zh-CN")


def write(path, text):
    path.parent.mkdir()
    path.write_text(text, encoding="utf-8")
    return path


def test_a_bad_upload_is_refused_and_still_deleted(tmp_path):
    path = tmp_path / "binary.txt"
    path.write_bytes(b"\x00\x01\x02binary")
    with pytest.raises(DataError) as caught:
        read_upload(path)
    assert caught.value.key == "data.binary" and not path.exists()
    assert "二进制" in error_text(caught.value, "zh-CN")


def test_the_forms_blanks_are_defaults_and_bad_values_a_translated_error():
    defaults = ["full", "", 3, 0, 4, 1, 128, 10, 0.0, 1.0, 0, 0.0, 0.0, 0, 8, 16.0, 0.05, "c_attn, c_proj"]
    settings = settings_from_form(*defaults)
    assert settings == FineTuneSettings(method="full", epochs=3, max_steps=None)  # max steps 0 = train for the epochs
    assert settings_from_form(*(["lora", "3e-4"] + defaults[2:])).effective_learning_rate == 3e-4
    with pytest.raises(gr.Error) as caught:
        settings_from_form(*(["full", "0"] + defaults[2:]), lang="zh-CN")
    assert caught.value.message == "学习率（learning_rate） = 0.0 超出范围，允许的范围是 (0, 1]。"
    assert len(defaults) == len(SETTING_NAMES)


def test_views_escape_the_users_text_and_read_in_chinese(tiny_source, tmp_path):
    text = "\n".join(f"<img src=x onerror=alert({i})> line {i} of some text to train on." for i in range(60))
    plan = plan_finetune(tiny_source, text, FineTuneSettings(max_steps=3, block_size=16), "x", tmp_path)
    html = preview_html(plan)
    assert "<img" not in html and "&lt;img src=x" in html and "Blocks of 16 tokens" in html
    assert "每块 16 个词元" in preview_html(plan, "zh-CN")
    job = {"id": 3, "status": "complete", "name": "<b>x</b>", "base_model": "tiny", "error": None,
           "progress": {"phase": "complete", "step": 3, "total_steps": 3, "tokens_per_s": 100.0, "elapsed_s": 2.0,
                        "train_losses": [[1, 5.0], [2, 4.0], [3, 3.5]], "val_losses": [[0, 5.5], [3, 3.9]]},
           "report": {"val_perplexity_before": 244.7, "val_perplexity_after": 49.4, "val_perplexity_change": -0.798,
                      "steps": 3, "total_seconds": 2.0}}
    assert "<b>x</b>" not in progress_html(job) and "step 3 / 3" in progress_html(job) and "已完成" in progress_html(job, "zh-CN")
    assert "244.7 → 49.4" in result_html(job) and "-79.8%" in result_html(job) and "ft-kept-best" not in result_html(job)
    overfitted = job | {"report": job["report"] | {"kept_best": {"step": 40, "val_perplexity": 139.2, "last_step": 60,
                                                                  "last_val_perplexity": 148.5, "overfit": True}}}
    assert "from step 40" in result_html(overfitted) and "overfitting" in result_html(overfitted)
    assert "保存的是第 40 步的模型" in result_html(overfitted, "zh-CN")
    assert len(loss_figure(job).data) == 2
    failed = job | {"status": "error", "error": {"key": "finetune.out_of_memory", "params": {"error": "<script>"}}}
    assert "&lt;script&gt;" in result_html(failed) and "<script>" not in result_html(failed)
    assert "Out of memory" in result_html(failed) and "内存不足" in result_html(failed, "zh-CN")
    saved_before = failed | {"error": {"text": "Training failed <script>"}}  # a job saved before errors had keys
    assert "Training failed &lt;script&gt;" in result_html(saved_before, "zh-CN")
    assert "还没有微调任务" in progress_html(None, "zh-CN")

