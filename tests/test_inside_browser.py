"""The Inside tab in real headless Chromium: from a generated run and from History, in English and in zh-CN.
Screenshots go to test-artifacts/."""

from .conftest import ARTIFACTS
from .test_ui_browser import fill, open_in_chinese, page  # noqa: F401 (page: the same module-scoped browser page)

DONE = ("() => { const s = document.querySelector('#stats')?.innerText || '';"
        " return /tokens\\/s|词元\\/秒/.test(s) && !/generating|生成中/.test(s); }")


def generate(page, prompt, model=None, seed="4"):
    if model:
        box = page.locator("#model input")
        box.fill(model)
        box.press("Enter")
    fill(page.locator("#prompt textarea"), prompt)
    fill(page.locator("#seed input, #seed textarea").first, seed)
    page.locator("#generate-btn").click()
    page.wait_for_timeout(500)
    page.wait_for_function(DONE, timeout=60_000)


def settled(page):
    """Wait until no event is running (Gradio shows "processing" on the components it is updating)."""
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.body.innerText.includes('processing')", timeout=60_000)


def funnel_text(page):
    return page.locator("#inside-funnel-table").inner_text()


def test_inside_tab_opens_the_last_run_and_its_funnel_follows_the_sliders(page):
    ARTIFACTS.mkdir(exist_ok=True)
    generate(page, "The value of <b>x</b> is")
    page.get_by_role("tab", name="Inside").click()
    page.locator("#inside-status").get_by_text("computed by torch fp32").wait_for(timeout=60_000)
    for plot in ("embedding", "residual", "lens", "grid", "funnel", "block", "mlp"):
        page.locator(f"#inside-{plot} .main-svg").first.wait_for(timeout=30_000)
    assert page.locator("#inside-lens-table tr").count() == 4  # header + embeddings + 2 blocks
    assert page.locator("#inside-kv tr").count() == 3 and "bytes" in page.locator("#inside-kv").inner_text()
    assert page.locator("#inside-lens-table b").count() == 0  # token text is escaped, never markup
    before = funnel_text(page)
    assert "top-k cut" in before
    top_k = page.locator("#inside-top-k input[type=number]")
    top_k.fill("1")
    top_k.press("Enter")
    page.wait_for_function("() => /top-k cut\\s+1\\s/.test(document.querySelector('#inside-funnel-table')?.innerText || '')",
                           timeout=30_000)
    page.locator("#inside-attribution-button").click()
    page.locator("#inside-attribution .main-svg").first.wait_for(timeout=60_000)
    assert "integrated gradients" in page.locator("#inside-attribution-summary").inner_text().lower()
    settled(page)
    page.screenshot(path=str(ARTIFACTS / "inside-tab.png"), full_page=True)


def test_a_history_run_opens_in_the_inside_tab(page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Generate").click()
    generate(page, "An object", seed="9")  # the newest run, not the one the Inside tab shows now
    page.get_by_role("tab", name="History").click()
    row = page.locator("#history-table .virtual-row").first
    row.wait_for(timeout=30_000)
    row.locator('[data-col="4"]').click()
    page.wait_for_function("() => /Run #/.test(document.querySelector('#history-run')?.innerText || '')", timeout=30_000)
    run_id = page.locator("#history-run").inner_text().split("Run #", 1)[1].split()[0]
    page.locator("#history-inside").click()
    expect(page.get_by_role("tab", name="Inside")).to_have_attribute("aria-selected", "true", timeout=30_000)
    page.wait_for_function(f"() => /Run {run_id} · computed by/.test(document.querySelector('#inside-status')?.innerText || '')",
                           timeout=60_000)
    page.locator("#inside-block .main-svg").first.wait_for(timeout=30_000)
    settled(page)
    page.screenshot(path=str(ARTIFACTS / "inside-from-history.png"), full_page=True)


def test_inside_tab_speaks_chinese_on_a_chinese_model(page, launched_app):
    context, zh = open_in_chinese(page, launched_app)
    zh.wait_for_timeout(1000)
    generate(zh, "床前明月光，", model="tiny-zh", seed="3")
    zh.get_by_role("tab", name="内部").click()
    zh.locator("#inside-status").get_by_text("由").first.wait_for(timeout=60_000)
    zh.locator("#inside-funnel .main-svg").first.wait_for(timeout=30_000)
    body = zh.locator("body").inner_text()
    for word in ("词嵌入", "位置编码", "残差", "逻辑透镜", "采样漏斗", "KV 缓存", "第 0 块"):
        assert word in body, word
    assert "\ufffd" not in body and "Logit lens: the prediction" not in body
    settled(zh)
    zh.screenshot(path=str(ARTIFACTS / "inside-zh-CN.png"), full_page=True)
    # From History too, in Chinese.
    zh.get_by_role("tab", name="历史记录").click()
    row = zh.locator("#history-table .virtual-row").first
    row.wait_for(timeout=30_000)
    row.locator('[data-col="4"]').click()
    zh.locator("#history-inside").click()
    zh.wait_for_function("() => /运行 \\d+ · 由/.test(document.querySelector('#inside-status')?.innerText || '')", timeout=60_000)
    settled(zh)
    assert zh.locator("#inside-lens-table").get_by_text("词嵌入").count() == 1
    zh.screenshot(path=str(ARTIFACTS / "inside-zh-CN-from-history.png"), full_page=True)
    context.close()


def test_an_onnx_run_shows_its_own_numbers_and_its_quantization_error(page):
    page.get_by_role("tab", name="Generate").click()
    page.locator("#backend").get_by_label("ONNX Runtime").check()
    try:
        generate(page, "The value of", seed="2")
        page.get_by_role("tab", name="Inside").click()
        page.locator("#inside-status").get_by_text("computed by onnx fp32").wait_for(timeout=120_000)
        page.locator("#inside-block .main-svg").first.wait_for(timeout=30_000)
        assert "scores, values and MLP need the torch backend" in page.locator("#inside-block").inner_text()
        page.locator("#inside-quant-button").click()
        page.locator("#inside-quant .main-svg").first.wait_for(timeout=120_000)
        assert "against PyTorch fp32" in page.locator("#inside-quant").inner_text()
        assert page.locator("#inside-attribution-button").is_disabled()
        assert "only the PyTorch backend gives" in page.locator("#inside-attribution-summary").inner_text()
        settled(page)
        page.screenshot(path=str(ARTIFACTS / "inside-onnx.png"), full_page=True)
    finally:
        page.get_by_role("tab", name="Generate").click()
        page.locator("#backend").get_by_label("PyTorch").check()
