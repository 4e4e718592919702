"""N samples in the Generate tab, in real headless Chromium: side by side, each with its seed, and one opened for the other
tabs; a group exported from History; the Sweep tab. Each test has its own page and makes the runs it reads."""

import re

from .browser import click_generate, fill, generate, open_history_run, open_tab, set_number, wait_for_notice
from .conftest import ARTIFACTS


def saved_group(page) -> str:
    page.wait_for_function("() => /Saved as group|已保存为分组/.test(document.querySelector('#samples-view')?.innerText || '')")
    text = page.locator("#samples-view").inner_text()
    return (text.split("Saved as group ")[1] if "Saved as group " in text else text.split("已保存为分组")[1]).split()[0].strip("：:")


def test_samples_stream_side_by_side_and_one_opens_in_the_main_view(page, app_history):
    fill(page.locator("#prompt textarea"), "The value of")
    fill(page.locator("#seed input, #seed textarea").first, "21")
    set_number(page, "max-new-tokens", 10)
    set_number(page, "samples", 3)
    click_generate(page)
    cards = page.locator("#samples-view .sample")
    cards.nth(2).wait_for()
    assert cards.count() == 3
    titles = [cards.nth(i).locator("h4").inner_text() for i in range(3)]
    assert titles == ["Sample 0 · seed 21", "Sample 1 · seed 22", "Sample 2 · seed 23"]
    assert all("log-prob" in cards.nth(i).inner_text() and "perplexity" in cards.nth(i).inner_text() for i in range(3))
    assert "seed 21" in page.locator("#stats").inner_text()
    # Open sample 2: the main views (and the last result the other tabs read) switch to it.
    page.locator("#open-sample").get_by_text("Sample 2 · seed 23").click()
    page.wait_for_function("() => /seed 23/.test(document.querySelector('#stats').innerText)")
    text = page.locator("#output textarea").input_value()
    rows = app_history.group(saved_group(page))
    assert [r["sample_index"] for r in rows] == [0, 1, 2] and rows[2]["output"] == text
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "generate-samples.png"), full_page=True)


def test_history_exports_the_selected_runs_group(page, app_history):
    lone_id = generate(page, "Alone, before the group", max_new_tokens=4)
    fill(page.locator("#prompt textarea"), "Group export of")
    set_number(page, "samples", 2)
    first_id = click_generate(page)
    group = saved_group(page)
    assert app_history.get(first_id)["group_id"] == group

    open_history_run(page, first_id)
    page.locator("#history-export").get_by_text("Export").first.click()  # open the accordion
    page.locator("#history-scope").get_by_text("The selected run's group").click()
    page.locator("#history-export-btn").click()
    link = page.locator("#history-export-file a").first
    link.wait_for()
    exported = page.request.get(link.get_attribute("href")).text().strip().splitlines()
    assert len(exported) == 2 and len(app_history.group(group)) == 2
    assert all(f'"group_id": "{group}"' in line or f'"group_id":"{group}"' in line for line in exported), exported[0][:300]

    # A run drawn alone has no group: a clear message, no file.
    open_history_run(page, lone_id)
    wait_for_notice(page, "was drawn alone", page.locator("#history-export-btn").click)


def test_samples_stack_on_a_narrow_chinese_screen(zh_page):
    zh = zh_page
    zh.set_viewport_size({"width": 560, "height": 1000})
    set_number(zh, "samples", 2)
    set_number(zh, "max-new-tokens", 6)
    click_generate(zh)
    cards = zh.locator("#samples-view .sample")
    cards.nth(1).wait_for()
    saved_group(zh)
    first, second = cards.nth(0).bounding_box(), cards.nth(1).bounding_box()
    assert second["y"] > first["y"] + first["height"] - 1  # one column: stacked, not side by side
    assert "样本 0" in cards.nth(0).inner_text() and "困惑度" in cards.nth(0).inner_text()


def test_sweep_tab_fills_the_heatmap_and_shows_a_cells_texts(page, app_history):
    set_number(page, "max-new-tokens", 4)
    open_tab(page, "sweep")
    fill(page.locator("#sweep-x-values textarea, #sweep-x-values input").first, "0.5, 1.5")
    fill(page.locator("#sweep-y-values textarea, #sweep-y-values input").first, "0.9")
    set_number(page, "sweep-samples", 2)
    page.locator("#sweep-run").click()
    page.wait_for_function("() => /Done: 2 cells/.test(document.querySelector('#sweep-status').innerText)")
    group = page.locator("#sweep-status").inner_text().split("group ")[1].rstrip(".").strip()
    rows = app_history.group(group)
    assert len(rows) == 2 * 2
    assert page.locator("#sweep-heatmap .heatmaplayer, #sweep-heatmap .hm").count() > 0
    page.locator("#sweep-cell input").click()
    page.get_by_role("option").nth(1).click()
    page.wait_for_function("() => document.querySelectorAll('#sweep-texts .sample').length == 2")
    assert "temperature=1.5" in page.locator("#sweep-texts").inner_text()


def test_sweep_tab_puts_strategies_side_by_side_in_english_and_chinese(page, zh_page, app_history):
    from playground.locales import text

    from .test_zh_everywhere_browser import untranslated

    # The default strategies, a column each, named in the page's language; the deterministic ones draw 1 text, the
    # sampled ones the tab's samples.
    shown = [("greedy", {}, 1), ("beam", {"beams": 4}, 1), ("top_k", {"top_k": 40}, 2), ("top_p", {"top_p": 0.9}, 2),
             ("contrastive", {"alpha": 0.6, "contrastive_k": 4}, 1), ("temperature", {"temperatures": 0.7}, 2),
             ("temperature", {"temperatures": 1.3}, 2)]
    for view, lang in ((page, "en"), (zh_page, "zh-CN")):
        set_number(view, "max-new-tokens", 4)
        open_tab(view, "sweep")
        view.locator("#sweep-mode").get_by_text(text("sweep.mode.strategies", lang)).click()
        set_number(view, "sweep-samples", 2)
        view.locator("#sweep-run-strategies").click()
        # The finished (or stopped) status names the sweep's group; progress does not.
        view.wait_for_function("() => /[0-9a-f]{16}/.test(document.querySelector('#sweep-status')?.innerText || '')")
        status = view.locator("#sweep-status").inner_text().strip()
        group = re.search("[0-9a-f]{16}", status).group()
        assert status == text("sweep.strategies_finished", lang, done=len(shown), group=group)
        labels = [text(f"sweep.strategy.{kind}", lang, **values) for kind, values, _ in shown]
        assert view.locator("#sweep-table thead th").all_inner_texts() == [text("sweep.table_metric", lang), *labels]
        assert text("sweep.metric.perplexity", lang) in view.locator("#sweep-table tbody").inner_text()
        columns = view.locator("#sweep-columns .strategy")
        assert [columns.nth(i).locator("h4").inner_text() for i in range(len(shown))] == labels
        assert [columns.nth(i).locator(".tokview").count() for i in range(len(shown))] == [n for _, _, n in shown]
        view.locator("#sweep-bars .barlayer .point").nth(len(shown) - 1).wait_for()  # the chart comes with the last column
        assert len(app_history.group(group)) == sum(n for _, _, n in shown)
        # Each mode has its own status line: the grid's last sweep (if any), then this one's again.
        view.locator("#sweep-mode").get_by_text(text("sweep.mode.grid", lang)).click()
        view.wait_for_function(f"() => !(document.querySelector('#sweep-status')?.innerText || '').includes('{group}')")
        view.locator("#sweep-mode").get_by_text(text("sweep.mode.strategies", lang)).click()
        view.wait_for_function(f"() => (document.querySelector('#sweep-status')?.innerText || '').includes('{group}')")
        assert view.locator("#sweep-status").inner_text().strip() == status
    assert untranslated(zh_page) == []  # the strategies' inputs, table, chart and columns read Chinese
