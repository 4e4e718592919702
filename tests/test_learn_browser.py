"""The Learn tab in real headless Chromium, in English on the English model and in Chinese on the Chinese one: every
chapter opens with its own words and a view of the learner's run, two tasks are checked on real runs, progress is kept,
the code behind the run is there, and no text is untranslated or U+FFFD."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from playground.learn.chapters import CHAPTERS
from playground.locales import text

from .browser import generate, open_app, open_tab, set_number

PAGES = [  # (browser locale, model, prompt: a long word that BPE cuts; Chinese characters, one token each)
    ("en-US", None, "Antidisestablishmentarianism is"),
    ("zh-CN", "tiny-zh", "今天天气很好"),
]


@pytest.mark.parametrize(("locale", "model", "prompt"), PAGES)
def test_learn_walks_every_chapter_on_the_learners_run(browser, launched_app, locale, model, prompt):
    lang = "zh-CN" if locale.startswith("zh") else "en"
    context, page = open_app(browser, launched_app, locale)
    try:
        # Greedy, two samples: the decoding chapter's task ("make every sample identical") is met by this run.
        page.get_by_label(text("generate.do_sample", lang)).uncheck()
        set_number(page, "samples", 2)
        run_id = generate(page, prompt, model=model, max_new_tokens=8)
        page.locator("#generate-code").click()  # the code behind the run, under it
        expect(page.locator("#generate-code-transformers")).to_contain_text("do_sample=False")
        expect(page.locator("#generate-code-notes")).to_contain_text(text("code.slip", lang)[:20])

        open_tab(page, "learn")
        expect(page.locator("#learn-run")).to_contain_text(f"#{run_id}")
        for chapter in CHAPTERS:
            page.locator(f'#learn-chapter input[value="{chapter.id}"]').check()
            expect(page.locator("#learn-text h2")).to_have_text(text(f"learn.{chapter.id}.title", lang))
            if chapter.view in ("attention", "lens", "embedding", "residual", "funnel", "surprisal"):
                expect(page.locator("#learn-view-plot .js-plotly-plot")).to_be_visible()
            elif chapter.view == "heads":
                expect(page.locator("#learn-view-image img")).to_be_visible()
            shown = page.locator("#learn-chapter").evaluate("e => e.closest('.column').parentElement.innerText")
            assert "\ufffd" not in shown
            if lang == "zh-CN":  # nothing of the tab's own words left in English
                for key in ("learn.check", "learn.open_tab", "learn.next", "learn.try_this", "learn.mark_read"):
                    assert text(key, "en") not in shown

        # Two tasks checked on the run: its tokens (a word cut into tokens in English; a character each in Chinese), and
        # its samples, identical under greedy decoding.
        page.locator('#learn-chapter input[value="tokens"]').check()
        expect(page.locator("#learn-text h2")).to_have_text(text("learn.tokens.title", lang))
        page.locator("#learn-check").click()
        tokens_verdict = "learn.check.split_word_met" if lang == "en" else "learn.check.split_word_not"
        expect(page.locator("#learn-verdict")).to_contain_text(text(tokens_verdict, lang, left="", right="", tokens=7)[:6])
        page.locator('#learn-chapter input[value="decoding"]').check()
        expect(page.locator("#learn-text h2")).to_have_text(text("learn.decoding.title", lang))
        page.locator("#learn-check").click()
        expect(page.locator("#learn-verdict")).to_contain_text(text("learn.check.identical_met", lang, count=2))
        expect(page.locator('#learn-chapter label:has(input[value="decoding"])')).to_contain_text("✓")
        page.locator('#learn-chapter input[value="serving"]').check()
        expect(page.locator("#learn-view-code")).to_contain_text("/v1/completions")
        page.locator("#learn-read").click()
        expect(page.locator('#learn-chapter label:has(input[value="serving"])')).to_contain_text("✓")
        page.locator("#learn-open-tab").click()  # into the full tab: Generate, which holds the code too
        expect(page.locator("#generate-btn")).to_be_visible()
    finally:
        context.close()


def test_a_new_browser_opens_on_learn_and_the_page_reopens_on_the_tab_last_chosen(browser, launched_app):
    """No tab chosen yet (a fresh browser): the page opens on Learn; after choosing Generate, a reload opens there."""
    from .browser import LONG_MS, VIEWPORT, wait_until_ready

    context = browser.new_context(viewport=VIEWPORT, locale="zh-CN", extra_http_headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    context.set_default_timeout(LONG_MS)
    page, console = context.new_page(), []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    try:
        page.goto(launched_app)
        wait_until_ready(page, "zh-CN", console)
        tab = lambda name: page.locator(f'[role=tablist] button[data-tab-id="{name}"]')  # noqa: E731
        expect(tab("learn")).to_have_attribute("aria-selected", "true")
        expect(tab("learn")).to_have_text(text("app.tab.learn", "zh-CN"))
        tab("generate").click()
        expect(tab("generate")).to_have_attribute("aria-selected", "true")
        page.reload()
        wait_until_ready(page, "zh-CN", console)
        expect(tab("generate")).to_have_attribute("aria-selected", "true")
        expect(page.locator("#generate-btn")).to_be_visible()
    finally:
        context.close()
