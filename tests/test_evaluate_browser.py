"""The Evaluate tab in a browser, English and Chinese: two models, PyTorch and ONNX int8, one table, one plot, the saved list."""

from __future__ import annotations

import pytest

from playground.evaluate import builtin_text
from playground.locales import text

from .browser import fill, open_tab, wait_for_notice
from .conftest import ARTIFACTS


@pytest.mark.parametrize("page_fixture", ["page", "zh_page"])
def test_evaluate_tab_scores_two_models_on_torch_and_int8(request, page_fixture):
    page = request.getfixturevalue(page_fixture)
    lang = "zh-CN" if page_fixture == "zh_page" else "en"
    open_tab(page, "evaluate")
    wait_for_notice(page, text("evaluate.no_text", lang), lambda: page.locator("#eval-run").click())
    models = page.locator("#eval-models input")
    models.fill("tiny-copy")  # the same weights under another name: a stand-in for a fine-tuned model
    models.press("Enter")
    page.locator("#eval-cells").get_by_text("onnx int8", exact=True).click()
    fill(page.locator("#eval-text textarea"), "Too short.")
    too_short = {"en": "an evaluation needs at least one window of 64 tokens", "zh-CN": "评估至少需要一个 64 个词元的窗口"}[lang]
    wait_for_notice(page, too_short, lambda: page.locator("#eval-run").click())
    fill(page.locator("#eval-text textarea"), builtin_text("en").text[:2000])
    page.locator("#eval-run").click()
    rows = page.locator("#eval-table tbody tr")
    rows.nth(3).wait_for()
    assert rows.count() == 4
    cells = [rows.nth(i).locator("td").all_inner_texts()[:3] for i in range(4)]
    assert cells == [["tiny-gpt2", "torch", "fp32"], ["tiny-gpt2", "onnx", "int8"], ["tiny-copy", "torch", "fp32"],
                     ["tiny-copy", "onnx", "int8"]]
    assert rows.nth(1).locator("td").nth(5).inner_text() != "—"  # int8's KL to fp32
    assert page.locator("#eval-table th").first.inner_text() == text("evaluate.col.model", lang)
    page.locator("#eval-plot .js-plotly-plot").wait_for()
    page.locator("#eval-saved tbody tr").nth(3).wait_for()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"evaluate-{lang}.png"), full_page=True)
