"""N samples in the Generate tab, in real headless Chromium: side by side, each with its seed, and one opened for the other tabs."""

from .conftest import ARTIFACTS
from .test_ui_browser import fill, open_in_chinese, page, wait_until_done  # noqa: F401 (page: the same module-scoped browser page)


def test_samples_stream_side_by_side_and_one_opens_in_the_main_view(page, app_history):
    fill(page.locator("#prompt textarea"), "The value of")
    fill(page.locator("#seed input, #seed textarea").first, "21")
    fill(page.locator("#max-new-tokens input[type=number]"), "10")
    fill(page.locator("#samples input[type=number]"), "3")
    page.locator("#samples input[type=number]").press("Enter")
    page.locator("#generate-btn").click()
    wait_until_done(page)
    cards = page.locator("#samples-view .sample")
    cards.nth(2).wait_for()
    assert cards.count() == 3
    titles = [cards.nth(i).locator("h4").inner_text() for i in range(3)]
    assert titles == ["Sample 0 · seed 21", "Sample 1 · seed 22", "Sample 2 · seed 23"]
    assert all("log-prob" in cards.nth(i).inner_text() and "perplexity" in cards.nth(i).inner_text() for i in range(3))
    assert "seed 21" in page.locator("#stats").inner_text()
    # Open sample 2: the main views (and the last result the other tabs read) switch to it.
    page.locator("#open-sample").get_by_text("Sample 2 · seed 23").click()
    page.wait_for_function("() => /seed 23/.test(document.querySelector('#stats').innerText)", timeout=10_000)
    text = page.locator("#output textarea").input_value()
    group = page.locator("#samples-view").inner_text().split("Saved as group ")[1].split()[0]
    rows = app_history.group(group)
    assert [r["sample_index"] for r in rows] == [0, 1, 2] and rows[2]["output"] == text
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "generate-samples.png"), full_page=True)


def test_history_exports_the_selected_runs_group(page, app_history):
    fill(page.locator("#prompt textarea"), "Alone, before the group")
    fill(page.locator("#max-new-tokens input[type=number]"), "4")
    fill(page.locator("#samples input[type=number]"), "1")
    page.locator("#samples input[type=number]").press("Enter")
    page.locator("#generate-btn").click()
    wait_until_done(page)
    fill(page.locator("#prompt textarea"), "Group export of")
    fill(page.locator("#samples input[type=number]"), "2")
    page.locator("#samples input[type=number]").press("Enter")
    page.locator("#generate-btn").click()
    wait_until_done(page)
    page.wait_for_function("() => /Saved as group/.test(document.querySelector('#samples-view').innerText)", timeout=60_000)
    group = page.locator("#samples-view").inner_text().split("Saved as group ")[1].split()[0]
    fill(page.locator("#samples input[type=number]"), "1")
    page.locator("#samples input[type=number]").press("Enter")

    page.get_by_role("tab", name="History").click()
    row = page.locator("#history-table .virtual-row").filter(has_text=group).first
    row.wait_for(timeout=30_000)
    row.locator('[data-col="4"]').click()
    page.wait_for_function("() => /Run #/.test(document.querySelector('#history-run')?.innerText || '')", timeout=30_000)
    page.locator("#history-export").get_by_text("Export").first.click()  # open the accordion
    page.locator("#history-scope").get_by_text("The selected run's group").click()
    page.locator("#history-export-btn").click()
    link = page.locator("#history-export-file a").first
    link.wait_for(timeout=30_000)
    exported = page.request.get(link.get_attribute("href")).text().strip().splitlines()
    assert len(exported) == 2 and len(app_history.group(group)) == 2
    assert all(f'"group_id": "{group}"' in line or f'"group_id":"{group}"' in line for line in exported), exported[0][:300]

    # A run drawn alone has no group: a clear message, no file.
    lone = page.locator("#history-table .virtual-row").filter(has_text="Alone, before the group").first
    lone.locator('[data-col="4"]').click()
    page.wait_for_function(f"() => !/{group}/.test(document.querySelector('#history-run')?.innerText || '')", timeout=30_000)
    page.locator("#history-export-btn").click()
    page.get_by_text("was drawn alone").first.wait_for(timeout=30_000)
    page.get_by_role("tab", name="Generate").click()


def test_samples_stack_on_a_narrow_chinese_screen(page, launched_app):
    context, zh = open_in_chinese(page, launched_app)
    zh.set_viewport_size({"width": 560, "height": 1000})
    zh.wait_for_timeout(1000)
    fill(zh.locator("#samples input[type=number]"), "2")
    zh.locator("#samples input[type=number]").press("Enter")
    fill(zh.locator("#max-new-tokens input[type=number]"), "6")
    zh.locator("#generate-btn").click()
    cards = zh.locator("#samples-view .sample")
    cards.nth(1).wait_for(timeout=60_000)
    zh.wait_for_function("() => /已保存为分组/.test(document.querySelector('#samples-view').innerText)", timeout=60_000)
    first, second = cards.nth(0).bounding_box(), cards.nth(1).bounding_box()
    assert second["y"] > first["y"] + first["height"] - 1  # one column: stacked, not side by side
    assert "样本 0" in cards.nth(0).inner_text() and "困惑度" in cards.nth(0).inner_text()
    context.close()


def test_sweep_tab_fills_the_heatmap_and_shows_a_cells_texts(page, app_history):
    fill(page.locator("#max-new-tokens input[type=number]"), "4")
    page.get_by_role("tab", name="Sweep").click()
    fill(page.locator("#sweep-x-values textarea, #sweep-x-values input").first, "0.5, 1.5")
    fill(page.locator("#sweep-y-values textarea, #sweep-y-values input").first, "0.9")
    fill(page.locator("#sweep-samples input[type=number]"), "2")
    page.locator("#sweep-samples input[type=number]").press("Enter")
    page.locator("#sweep-run").click()
    page.wait_for_function("() => /Done: 2 cells/.test(document.querySelector('#sweep-status').innerText)", timeout=60_000)
    group = page.locator("#sweep-status").inner_text().split("group ")[1].rstrip(".").strip()
    rows = app_history.group(group)
    assert len(rows) == 2 * 2
    assert page.locator("#sweep-heatmap .heatmaplayer, #sweep-heatmap .hm").count() > 0
    page.locator("#sweep-cell input").click()
    page.get_by_role("option").nth(1).click()
    page.wait_for_function("() => document.querySelectorAll('#sweep-texts .sample').length == 2", timeout=10_000)
    assert "temperature=1.5" in page.locator("#sweep-texts").inner_text()
    page.get_by_role("tab", name="Generate").click()
