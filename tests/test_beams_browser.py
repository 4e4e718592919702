"""The beam tree in real headless Chromium, in English and Chinese: a beam search run from the Generate tab draws its
tree (statuses, returned paths, the token card on hover), exports it, and History draws it again. Screenshots go to
test-artifacts/."""

import pytest

from playground.locales import text

from .browser import LONG_MS, click_generate, fill, open_history_run, open_tab, set_number, wait_for_history_row
from .conftest import ARTIFACTS


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_a_beam_search_run_draws_its_tree_and_history_draws_it_again(request, lang):
    page = request.getfixturevalue("page" if lang == "en" else "zh_page")
    from playwright.sync_api import expect

    fill(page.locator("#prompt textarea"), "The value of the")
    set_number(page, "max-new-tokens", 6)
    page.get_by_text(text("generate.strategy", lang)).click()
    set_number(page, "num-beams", 3)
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#strategy").screenshot(path=str(ARTIFACTS / f"beam-settings-{lang}.png"))
    run_id = click_generate(page)
    page.get_by_text(text("generate.beam_tree", lang), exact=True).click()
    tree = page.locator("#beam-tree-view")
    expect(tree).to_be_visible()
    nodes = tree.locator(".beamnode")
    assert nodes.count() == 6 * 6  # 2 x 3 continuations at each of 6 steps
    assert tree.locator(".beamnode.pruned").count() > 0 and tree.locator(".beamnode.returned").count() >= 6
    assert text("beams.step", lang, step=6) in tree.inner_text()
    node = tree.locator(".beamnode.returned").last
    node.hover()
    tip = node.locator(".tip")
    expect(tip).to_be_visible()
    assert text("tip.rank", lang) in tip.inner_text() and text("beams.tip", lang, beam=1, logprob="", cumulative="", score="",
                                                               status="").split(" ")[0] in tip.inner_text()
    page.locator("#beam-tree").screenshot(path=str(ARTIFACTS / f"beam-tree-{lang}.png"))
    page.locator("#beam-tree-svg").click()
    expect(page.locator("#beam-tree-file a").first).to_be_attached(timeout=LONG_MS)
    open_tab(page, "history")
    wait_for_history_row(page, run_id)
    open_history_run(page, run_id)
    again = page.locator("#history-token-view .beamtree")
    expect(again).to_be_visible()
    assert again.locator(".beamnode").count() == 36
    page.screenshot(path=str(ARTIFACTS / f"beam-tree-history-{lang}.png"), full_page=True)
