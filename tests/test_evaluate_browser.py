"""The Evaluate tab in a browser, English and Chinese: the base model against a model fine-tuned from it, each on PyTorch
and ONNX int8, with a shipped lm-eval task: one table (a task column), one plot, the saved list."""

from __future__ import annotations

import pytest

from playground.evaluate import builtin_text
from playground.locales import text

from .browser import fill, open_tab, wait_for_notice
from .conftest import ARTIFACTS

TUNED = "tiny-tuned-eval"  # a name of this module's own in the shared models folder


@pytest.fixture(scope="module")
def tuned_model(tiny_source, models_root):
    """The tiny model fine-tuned for a few steps (the project's fine-tuning, one thread) on the English held-out text
    that comes after the part the test scores, into the launched app's models folder."""
    from playground.finetune.run import FineTuneSettings, run_finetune

    settings = FineTuneSettings(learning_rate=3e-3, max_steps=12, block_size=32, batch_size=8, warmup_steps=2, eval_every=6)
    run_finetune(tiny_source, builtin_text("en").text[2000:14000], settings, TUNED, models_root, threads=1)
    return TUNED


@pytest.mark.parametrize("page_fixture", ["page", "zh_page"])
def test_evaluate_tab_scores_base_and_fine_tuned_on_torch_and_int8_with_a_task(request, page_fixture, tuned_model):
    page = request.getfixturevalue(page_fixture)
    lang = "zh-CN" if page_fixture == "zh_page" else "en"
    open_tab(page, "evaluate")
    wait_for_notice(page, text("evaluate.no_text", lang), lambda: page.locator("#eval-run").click())
    models = page.locator("#eval-models input")
    models.fill(tuned_model)
    models.press("Enter")
    page.locator("#eval-cells").get_by_text("onnx int8", exact=True).click()
    page.locator("#eval-tasks").get_by_text("python_mc_en", exact=True).click()
    fill(page.locator("#eval-text textarea"), "Too short.")
    too_short = {"en": "an evaluation needs at least one window of 64 tokens", "zh-CN": "评估至少需要一个 64 个词元的窗口"}[lang]
    wait_for_notice(page, too_short, lambda: page.locator("#eval-run").click())
    fill(page.locator("#eval-text textarea"), builtin_text("en").text[:2000])
    page.locator("#eval-run").click()
    rows = page.locator("#eval-table tbody tr")
    rows.nth(3).wait_for()
    assert rows.count() == 4
    cells = [rows.nth(i).locator("td").all_inner_texts() for i in range(4)]
    assert [row[:3] for row in cells] == [["tiny-gpt2", "torch", "fp32"], ["tiny-gpt2", "onnx", "int8"],
                                          [TUNED, "torch", "fp32"], [TUNED, "onnx", "int8"]]
    assert cells[1][5] != "—" and cells[3][5] != "—"  # int8's KL to fp32
    assert cells[0][4] != cells[2][4]  # bits per byte: the fine-tuned weights are not the base's
    headers = page.locator("#eval-table th").all_inner_texts()
    assert headers[0] == text("evaluate.col.model", lang)
    accuracy = text("evaluate.col.task", lang, task="python_mc_en", metric=text("evaluate.metric.acc", lang))
    column = headers.index(accuracy)
    assert all(" ± " in row[column] for row in cells)  # every model, backend and variant ran the task
    page.locator("#eval-plot .js-plotly-plot").wait_for()
    bars = page.locator("#eval-plot .ytick text").all_text_contents()
    assert f"{TUNED} · onnx int8" in bars and "tiny-gpt2 · torch fp32" in bars
    page.locator("#eval-saved tbody tr").nth(3).wait_for()
    assert accuracy in page.locator("#eval-saved th").all_inner_texts()  # saved with its task results
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"evaluate-{lang}.png"), full_page=True)
