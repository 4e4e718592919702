"""The Inside tab in real headless Chromium: from a generated run and from History, in English and in zh-CN.
Each test has its own page and makes the runs it reads. Screenshots go to test-artifacts/."""

from .browser import generate, open_history_run, open_tab
from .conftest import ARTIFACTS


def settled(page):
    """Wait until no event is running (Gradio shows "processing" on the components it is updating)."""
    page.wait_for_function("() => !document.body.innerText.includes('processing')")


def funnel_text(page):
    return page.locator("#inside-funnel-table").inner_text()


def test_inside_tab_opens_the_last_run_and_its_funnel_follows_the_sliders(page):
    ARTIFACTS.mkdir(exist_ok=True)
    generate(page, "The value of <b>x</b> is")
    open_tab(page, "inside")
    page.locator("#inside-status").get_by_text("computed by torch fp32").wait_for()
    for plot in ("embedding", "residual", "lens", "grid", "funnel", "block", "mlp"):
        page.locator(f"#inside-{plot} .main-svg").first.wait_for()
    assert page.locator("#inside-lens-table tr").count() == 4  # header + embeddings + 2 blocks
    assert page.locator("#inside-kv tr").count() == 3 and "bytes" in page.locator("#inside-kv").inner_text()
    assert page.locator("#inside-lens-table b").count() == 0  # token text is escaped, never markup
    assert "top-k cut" in funnel_text(page)
    top_k = page.locator("#inside-top-k input[type=number]")
    top_k.fill("1")
    top_k.press("Enter")
    page.wait_for_function("() => /top-k cut\\s+1\\s/.test(document.querySelector('#inside-funnel-table')?.innerText || '')")
    page.locator("#inside-attribution-button").click()
    page.locator("#inside-attribution .main-svg").first.wait_for()
    assert "integrated gradients" in page.locator("#inside-attribution-summary").inner_text().lower()
    settled(page)
    page.screenshot(path=str(ARTIFACTS / "inside-tab.png"), full_page=True)


def test_a_history_run_opens_in_the_inside_tab(page):
    from playwright.sync_api import expect

    older = generate(page, "An object", seed="9")
    generate(page, "A newer run, which the Inside tab would show by default", seed="10")
    open_history_run(page, older)
    page.locator("#history-inside").click()
    expect(page.get_by_role("tab", name="Inside")).to_have_attribute("aria-selected", "true")
    page.wait_for_function(f"() => /Run {older} · computed by/.test(document.querySelector('#inside-status')?.innerText || '')")
    page.locator("#inside-block .main-svg").first.wait_for()
    settled(page)
    page.screenshot(path=str(ARTIFACTS / "inside-from-history.png"), full_page=True)


def test_inside_tab_speaks_chinese_on_a_chinese_model(zh_page):
    zh = zh_page
    run_id = generate(zh, "床前明月光，", model="tiny-zh", seed="3")
    open_tab(zh, "inside")
    zh.locator("#inside-status").get_by_text("由").first.wait_for()
    zh.locator("#inside-funnel .main-svg").first.wait_for()
    body = zh.locator("body").inner_text()
    for word in ("词嵌入", "位置编码", "残差", "逻辑透镜", "采样漏斗", "KV 缓存", "第 0 块"):
        assert word in body, word
    assert "\ufffd" not in body and "Logit lens: the prediction" not in body
    settled(zh)
    zh.screenshot(path=str(ARTIFACTS / "inside-zh-CN.png"), full_page=True)
    # From History too, in Chinese.
    open_history_run(zh, run_id)
    zh.locator("#history-inside").click()
    zh.wait_for_function(f"() => /运行 {run_id} · 由/.test(document.querySelector('#inside-status')?.innerText || '')")
    settled(zh)
    assert zh.locator("#inside-lens-table").get_by_text("词嵌入").count() == 1
    zh.screenshot(path=str(ARTIFACTS / "inside-zh-CN-from-history.png"), full_page=True)


def test_an_onnx_run_shows_its_own_numbers_and_its_quantization_error(page):
    page.locator("#backend").get_by_label("ONNX Runtime").check()
    generate(page, "The value of", seed="2")
    open_tab(page, "inside")
    page.locator("#inside-status").get_by_text("computed by onnx fp32").wait_for()
    page.locator("#inside-block .main-svg").first.wait_for()
    assert "scores, values and MLP need the torch backend" in page.locator("#inside-block").inner_text()
    page.locator("#inside-quant-button").click()
    page.locator("#inside-quant .main-svg").first.wait_for()
    assert "against PyTorch fp32" in page.locator("#inside-quant").inner_text()
    assert page.locator("#inside-attribution-button").is_disabled()
    assert "only the PyTorch backend gives" in page.locator("#inside-attribution-summary").inner_text()
    settled(page)
    page.screenshot(path=str(ARTIFACTS / "inside-onnx.png"), full_page=True)
