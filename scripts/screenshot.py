"""Screenshot the running app in headless Chromium: `python scripts/screenshot.py URL OUT.png` (used for docs/)."""

import sys

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def main(url: str, out: str) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.locator("#token-view").wait_for()
        page.wait_for_timeout(1000)
        page.locator("#prompt textarea").fill("The return value of a function is")
        page.locator("#generate-btn").click()
        page.wait_for_function("document.querySelector('#stats') && /tokens\\/s/.test(document.querySelector('#stats').innerText) && !/generating/.test(document.querySelector('#stats').innerText)", timeout=60000)
        page.locator("#token-view .tok:not(.prompt)").nth(3).hover()
        page.wait_for_timeout(300)
        page.screenshot(path=out, full_page=True)
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
