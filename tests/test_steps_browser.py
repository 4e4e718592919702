"""The Step-by-step tab (单步) in real headless Chromium, in English and in zh-CN: a few steps (a token picked from the list,
one the sampler picks, one typed), an undo, and the run saved. Screenshots go to test-artifacts/."""

from .browser import fill, open_tab, set_up_generate, wait_for_history_row
from .conftest import ARTIFACTS

STEP = {"en": r"Step (\d+) of at most", "zh-CN": r"第 (\d+) 步，最多"}
BY_HAND = {"en": r"picked by hand so far: (\d+)", "zh-CN": r"目前手动选的：(\d+) 个"}
SAVED = {"en": r"Saved as run #(\d+)", "zh-CN": r"已保存为第 (\d+) 条运行"}


def wait_for_status(page, pattern: str, value: int) -> None:
    """Wait until the step status's `pattern` reads `value` (the step, or the hand-picked count) and nothing runs."""
    page.wait_for_function(
        """([pattern, value]) => {
            const s = document.querySelector('#steps-status')?.innerText || '';
            const m = s.match(new RegExp(pattern));
            return m && Number(m[1]) === value && !document.body.innerText.includes('processing');
        }""", arg=[pattern, value])


def walk(page, lang: str, prompt: str, typed: str, model: str | None = None) -> int:
    """Start from the Generate tab's prompt (seed 5, 12 new tokens), pick the 3rd candidate, let the sampler pick, undo,
    type a token, save; returns the saved run's id."""
    set_up_generate(page, prompt, "5", model, 12)
    open_tab(page, "steps")
    page.locator("#steps-start").click()
    wait_for_status(page, STEP[lang], 1)
    page.locator("#steps-funnel .main-svg").first.wait_for()
    assert page.locator("#steps-choices label").count() == 20
    third = page.locator("#steps-choices label").nth(2)
    third.click()
    wait_for_status(page, STEP[lang], 2)
    page.locator("#steps-sample").click()
    wait_for_status(page, STEP[lang], 3)
    wait_for_status(page, BY_HAND[lang], 1)
    page.locator("#steps-undo").click()
    wait_for_status(page, STEP[lang], 2)
    fill(page.locator("#steps-typed input"), typed)
    page.locator("#steps-type-pick").click()
    wait_for_status(page, STEP[lang], 3)
    wait_for_status(page, BY_HAND[lang], 2)
    assert typed.strip() in page.locator("#steps-so-far").inner_text()
    assert page.locator("#steps-so-far .diverge").count() >= 2  # the two tokens picked by hand are outlined
    page.locator("#steps-save").click()
    page.wait_for_function("p => new RegExp(p).test(document.querySelector('#steps-status')?.innerText || '')", arg=SAVED[lang])
    import re

    return int(re.search(SAVED[lang], page.locator("#steps-status").inner_text()).group(1))


def test_steps_tab_walks_a_few_steps_undoes_and_saves_in_english(page):
    ARTIFACTS.mkdir(exist_ok=True)
    run_id = walk(page, "en", "Once upon a time", " the")
    page.screenshot(path=str(ARTIFACTS / "steps-tab-en.png"), full_page=True)
    open_tab(page, "history")
    wait_for_history_row(page, run_id)


def test_steps_tab_in_chinese_on_the_chinese_model(zh_page):
    ARTIFACTS.mkdir(exist_ok=True)
    walk(zh_page, "zh-CN", "人生", "的", model="tiny-zh")
    from .test_zh_everywhere_browser import settled, untranslated

    settled(zh_page)
    assert not untranslated(zh_page)  # no English left in the tab (tokens and typed text are the model's and the user's)
    body = zh_page.locator("body").inner_text()
    for words in ("一步一步生成", "让采样器选", "撤销", "保存为一次运行", "重新归一化 → 采样"):
        assert words in body, words
    zh_page.screenshot(path=str(ARTIFACTS / "steps-tab-zh.png"), full_page=True)
