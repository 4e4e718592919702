"""What the browser tests share: a page of the app in a language, filling fields, and making a run and finding it.

Every wait is on a condition the page shows (an element, a status text, a run id), never on a fixed time.
"""

from __future__ import annotations

import os
import re
import shutil

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
HAVE_CHROMIUM = os.path.exists(CHROMIUM)
VIEWPORT = {"width": 1400, "height": 1000}
# Every wait is for a condition, so a long limit costs nothing when things work; it is long because a 2-core machine
# with another process busy may take minutes for an ONNX export or a fine-tune that takes seconds alone.
LONG_MS = 180_000
# How long a page may take to be ready before it is reloaded (wait_until_ready): a page that gets there does so in
# seconds (the slowest browser test's setup in a CI run of 2026-12-06, app launch included, took 6.3 s), one that does
# not never does, and each minute waited for it is one of the suite's 12 (that run waited 90 s once, then reloaded).
PAGE_READY_MS = 45_000

# A finished run's stats line names the run it was saved as (playground/locales: stats.saved).
SAVED = {"en": r"saved as run #(\d+)", "zh-CN": r"已保存为第 (\d+) 条记录"}
RUNNING = {"en": "generating", "zh-CN": "生成中"}


# A browser that has chosen the Generate tab before (the page opens where its browser last was: a new one on Learn).
CHOSE_GENERATE = "try { window.localStorage.setItem('gpt2pg.tab', 'generate'); } catch (error) {}"


def open_app(browser, url: str, locale: str = "en-US", viewport: dict | None = None):
    """The app in a new browser context (its own cookies and session) whose language is `locale`, once the page
    holds its language's values (`#page-ready`); returns (context, page)."""
    lang = "zh-CN" if locale.startswith("zh") else "en"
    headers = {"Accept-Language": "zh-CN,zh;q=0.9"} if lang == "zh-CN" else {"Accept-Language": "en-US,en;q=0.9"}
    context = browser.new_context(viewport=viewport or VIEWPORT, locale=locale, extra_http_headers=headers)
    context.set_default_timeout(LONG_MS)
    context.add_init_script(CHOSE_GENERATE)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.goto(url)
    wait_until_ready(page, lang, console)
    return context, page


def wait_until_ready(page, lang: str, console: list[str]) -> None:
    """Wait for the page to hold its language's values (`#page-ready`, set by the app's one load event).

    About once in a full run's several hundred page loads (2026-12-05, idle or with one core kept busy), a page never
    got there: drawn, but with none of the load event's values, its console empty and every server thread idle; the
    same tests in the same order pass alone. A page that misses it
    leaves its evidence in test-artifacts/ (a screenshot, its console, every Python thread's stack: the app is
    served from this process) and is loaded once more, as a user would reload it; a second miss fails the test.
    """
    import faulthandler

    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    from .conftest import ARTIFACTS

    ready = page.locator(f'#page-ready[data-lang="{lang}"]')
    try:
        ready.wait_for(state="attached", timeout=PAGE_READY_MS)
        failed = ready.get_attribute("data-failed")
        if failed:  # a view the app could not fill (its traceback is in the log): said in the run's summary
            import warnings

            warnings.warn(f"part of the page failed to render: {failed}", stacklevel=3)
        return
    except PlaywrightTimeout:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "page-not-ready.png"), full_page=True)
        with open(ARTIFACTS / "page-not-ready.txt", "w", encoding="utf-8") as handle:
            handle.write("console:\n" + "\n".join(console) + "\n\nthreads:\n")
            handle.flush()
            faulthandler.dump_traceback(file=handle, all_threads=True)
        import warnings

        # A warning, so that a run that passed after the reload still says so in its summary (CI's log is all we see).
        warnings.warn(f"#page-ready did not come within {PAGE_READY_MS / 1000:.0f} s, the page was reloaded; its console: "
                      + " | ".join(console[-15:]) + f" (screenshot and thread stacks in {ARTIFACTS})", stacklevel=2)
    page.reload()
    ready.wait_for(state="attached")


def log_in(browser, url: str, user: str, password: str, locale: str = "en-US"):
    """The app behind a login, in a new browser context logged in as `user`, once the page is ready; returns (context, page)."""
    lang = "zh-CN" if locale.startswith("zh") else "en"
    context = browser.new_context(viewport=VIEWPORT, locale=locale)
    context.set_default_timeout(LONG_MS)
    context.add_init_script(CHOSE_GENERATE)
    page = context.new_page()
    page.goto(url)
    page.locator("input[type=text]").first.fill(user)
    page.locator("input[type=password]").first.fill(password)
    page.get_by_role("button", name=re.compile("^(Login|登录)$")).click()  # Gradio's login page, in the browser's language
    page.locator(f'#page-ready[data-lang="{lang}"]').wait_for(state="attached")
    return context, page


def lang_of_page(page) -> str:
    return page.locator("#page-ready").get_attribute("data-lang")


def fill(locator, text: str, tries: int = 3) -> None:
    """Fill a field and wait until the app holds that value.

    Playwright fills by selecting the old text and inserting the new, two steps: an update that the app pushes into
    the field between them (the example prompt that follows a just-chosen model) leaves both texts in the box, so a
    field that does not hold exactly `text` once the app is idle again is filled again."""
    from playwright.sync_api import expect

    for attempt in range(tries):
        locator.fill(text)
        try:
            expect(locator).to_have_value(text, timeout=LONG_MS if attempt == tries - 1 else 15_000)
            return
        except AssertionError:
            if attempt == tries - 1:
                raise


def set_number(page, elem_id: str, value) -> None:
    """A slider's or number's value, committed as a user does (Enter)."""
    box = page.locator(f"#{elem_id} input[type=number]")
    fill(box, str(value))
    box.press("Enter")


def shown_run_id(page) -> int | None:
    """The id of the run the Generate tab's stats show as saved (None before any)."""
    text = page.locator("#stats").inner_text()
    match = re.search(SAVED[lang_of_page(page)], text)
    return int(match.group(1)) if match else None


def wait_for_new_run(page, before: int | None) -> int:
    """Wait until the stats show a finished run saved under an id other than `before`; returns that id."""
    lang = lang_of_page(page)
    page.wait_for_function(
        """([saved, running, before]) => {
            const s = document.querySelector('#stats')?.innerText || '';
            const m = s.match(new RegExp(saved));
            return m && Number(m[1]) !== before && !s.includes(running);
        }""", arg=[SAVED[lang], RUNNING[lang], before if before is not None else -1])
    return shown_run_id(page)


def click_generate(page, button: str = "#generate-btn") -> int:
    """Click Generate (or another button that starts a run) and wait for the run to finish; returns its id."""
    before = shown_run_id(page)
    page.locator(button).click()
    return wait_for_new_run(page, before)


def generate(page, prompt: str, seed: str = "4", model: str | None = None, max_new_tokens: int | None = None) -> int:
    """Run `prompt` on the Generate tab (optionally another model, a seed, a length); returns the saved run's id."""
    set_up_generate(page, prompt, seed, model, max_new_tokens)
    return click_generate(page)


def set_up_generate(page, prompt: str, seed: str = "4", model: str | None = None, max_new_tokens: int | None = None) -> None:
    """The Generate tab with `prompt`, a seed, optionally another model and a length (the Step by step tab starts from it)."""
    page.get_by_role("tab", name=tab_name(page, "generate")).click()
    if model:
        box = page.locator("#model input")
        box.fill(model)
        box.press("Enter")
    fill(page.locator("#prompt textarea"), prompt)
    fill(page.locator("#seed input, #seed textarea").first, seed)
    if max_new_tokens is not None:
        set_number(page, "max-new-tokens", max_new_tokens)


NOTICE_WATCH_JS = """() => {
  window.__notices = new Set();
  const look = () => document.querySelectorAll('[data-testid="toast-text"]').forEach((e) => window.__notices.add(e.textContent));
  new MutationObserver(look).observe(document.body, {childList: true, subtree: true, characterData: true});
  look();
}"""


# The notices the apps served by this test process sent to their pages, as (time.monotonic(), text): kept by
# record_sent_notices (conftest installs it). Gradio 6.17's front end now and then never draws a notice that reached
# the page: the server sent it, the page's event stream read it to the end, and no toast was ever added to the DOM
# (measured 2026-12-06 with both cores kept busy: about one Cancel click in ten in a row of fresh pages; once in a CI
# run). A wait for a notice that the server provably sent, but the page never drew, passes with a warning instead.
SENT_NOTICES: list[tuple[float, str]] = []
DRAW_GRACE_S = 20.0  # how long a sent notice may take to be drawn before it counts as dropped by the front end


def record_sent_notices() -> None:
    """Keep the text of every notice (gr.Info, gr.Warning, gr.Error) that Gradio's queue sends to a live page."""
    import time

    from gradio import queueing, server_messages

    send = queueing.Queue.send_message
    if getattr(send, "records_notices", False):
        return

    def recording(self, event, message):
        if event.alive:
            if isinstance(message, server_messages.LogMessage):
                SENT_NOTICES.append((time.monotonic(), message.log))
            elif isinstance(message, server_messages.ProcessCompletedMessage) and message.output.get("error"):
                SENT_NOTICES.append((time.monotonic(), str(message.output["error"])))
        return send(self, event, message)

    recording.records_notices = True
    queueing.Queue.send_message = recording


def wait_for_notice(page, message: str, action) -> None:
    """Do `action()` and wait until the app has shown a notice (Gradio's toast) holding `message`. Every notice the page
    shows from before the action is recorded as it appears, so one that has come and gone (an error notice closes
    itself after 10 s, which a loaded machine can let pass between two looks) still counts. A notice the server sent
    but the page did not draw within DRAW_GRACE_S passes with a warning (see SENT_NOTICES); one never sent fails, and
    the page as it was is kept in test-artifacts/ for whoever reads the failure."""
    import time
    import warnings

    from .conftest import ARTIFACTS

    page.evaluate(NOTICE_WATCH_JS)
    since = time.monotonic()
    action()
    drawn = "m => Array.from(window.__notices || []).some((t) => t.includes(m))"
    while time.monotonic() - since < LONG_MS / 1000:
        if page.evaluate(drawn, message):
            return
        sent = [at for at, text in SENT_NOTICES if at >= since and message in text]
        if sent and time.monotonic() - sent[0] > DRAW_GRACE_S:
            warnings.warn(f"the app sent the notice {message!r} but the page never drew it (Gradio's front end dropped it)",
                          stacklevel=2)
            return
        time.sleep(0.2)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "notice-missing.png"), full_page=True)
    seen = page.evaluate("() => Array.from(window.__notices || [])")
    (ARTIFACTS / "notice-missing.txt").write_text(f"wanted: {message}\nseen: {seen}\n\n{page.locator('body').inner_text()}")
    # What came instead is in the failure itself: CI's log is often all a reader of a failed run has.
    raise AssertionError(f"no notice holding {message!r} came, nor did the app send one; the page showed these: {seen}")


def tab_name(page, tab: str) -> str:
    from playground.locales import text

    return text(f"app.tab.{tab}", lang_of_page(page))


def open_tab(page, tab: str) -> None:
    page.get_by_role("tab", name=tab_name(page, tab)).click()


def history_row(page, run_id: int):
    """The History tab's row of run `run_id`, found by its id."""
    return page.locator(f'#history-table tr[data-run-id="{run_id}"]')


def wait_for_history_row(page, run_id: int):
    """Run `run_id`'s row in the History table, once shown. If it never shows, the page as it was is kept for whoever
    reads the failure: a screenshot and the table's text in test-artifacts/ (a row that a saved run never got is the
    flake of issue 24, seen once in about six loaded runs)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    from .conftest import ARTIFACTS

    row = history_row(page, run_id)
    try:
        row.wait_for()
    except PlaywrightTimeout:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"history-missing-run-{run_id}.png"), full_page=True)
        (ARTIFACTS / f"history-missing-run-{run_id}.txt").write_text(page.locator("#history-table").inner_text(timeout=10_000))
        raise
    return row


def open_history_run(page, run_id: int) -> None:
    """Open the History tab, find run `run_id` among the newest runs and select it."""
    open_tab(page, "history")
    row = wait_for_history_row(page, run_id)
    row.locator('[data-col="4"]').click()
    page.wait_for_function("id => new RegExp('#' + id + '(?!\\\\d)').test(document.querySelector('#history-run')?.innerText || '')",
                           arg=run_id)
