"""Screenshot the running app in headless Chromium (used for docs/):

    python scripts/screenshot.py URL OUT.png [--locale zh-CN] [--prompt TEXT] [--model NAME] [--seed N]
                                 [--sweep-strategies]

--sweep-strategies: the Sweep tab's strategies side by side (the default strategies, 2 samples, 24 new tokens) instead
of the Generate tab (docs/sweep-strategies.png).
"""

import argparse

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
# The stats line in either language, once the run is over.
DONE = ("() => { const s = document.querySelector('#stats')?.innerText || '';"
        " return /tokens\\/s|词元\\/秒/.test(s) && !/generating|生成中/.test(s); }")


def main(url: str, out: str, locale: str = "en-US", prompt: str = "The return value of a function is", model: str | None = None,
         seed: str = "", sweep_strategies: bool = False) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale=locale,
                                      extra_http_headers={"Accept-Language": locale})
        # The Generate tab, as a browser that chose it before (a new one opens on Learn)
        context.add_init_script("try { window.localStorage.setItem('gpt2pg.tab', 'generate'); } catch (error) {}")
        page = context.new_page()
        page.goto(url)
        page.locator("#token-view").wait_for()
        page.wait_for_timeout(1000)
        if model:
            page.locator("#model input").fill(model)
            page.locator("#model input").press("Enter")
        page.locator("#prompt textarea").fill(prompt)
        page.locator("#seed input, #seed textarea").first.fill(seed)
        if sweep_strategies:
            screenshot_strategies(page, prompt, out)
            browser.close()
            return
        page.locator("#generate-btn").click()
        page.wait_for_function(DONE, timeout=60000)
        output_tokens = page.locator("#token-view .tok:not(.prompt), #token-view .unit:not(.prompt)")
        output_tokens.nth(min(3, output_tokens.count() - 1)).hover()
        page.wait_for_timeout(300)
        page.screenshot(path=out, full_page=True)
        browser.close()


def screenshot_strategies(page, prompt: str, out: str) -> None:
    """The Sweep tab's strategies side by side on the Generate tab's model and seed, once every column has run."""
    for elem_id, value in (("max-new-tokens", 24),):
        page.locator(f"#{elem_id} input[type=number]").fill(str(value))
        page.locator(f"#{elem_id} input[type=number]").press("Enter")
    page.locator("[role=tablist] button[data-tab-id=sweep]").click()
    page.locator("#sweep-mode label").nth(1).click()
    page.locator("#sweep-prompt textarea").fill(prompt)
    page.locator("#sweep-samples input[type=number]").fill("2")
    page.locator("#sweep-samples input[type=number]").press("Enter")
    page.wait_for_timeout(500)
    page.locator("#sweep-run-strategies").click()
    page.wait_for_function("() => /[0-9a-f]{16}/.test(document.querySelector('#sweep-status')?.innerText || '')", timeout=300000)
    page.wait_for_timeout(1000)
    page.screenshot(path=out, full_page=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("out")
    parser.add_argument("--locale", default="en-US")
    parser.add_argument("--prompt", default="The return value of a function is")
    parser.add_argument("--model", default=None)
    parser.add_argument("--seed", default="")
    parser.add_argument("--sweep-strategies", action="store_true")
    args = parser.parse_args()
    main(args.url, args.out, args.locale, args.prompt, args.model, args.seed, args.sweep_strategies)
