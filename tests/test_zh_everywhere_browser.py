"""A Simplified-Chinese browser in real headless Chromium: every tab read for English left untranslated, the Chinese
example prompt, a branch shown whole, the Benchmark's checks and progress in Chinese, and Gradio's own API page.
Each test has its own page (tests/conftest.py) and makes the runs it reads; every wait is on what the page shows."""

import re

import pytest

from playground.locales import EN, ZH_CN, text
from playground.config import SETTING_NAMES
from playground.ui.sweep_tab import AXES

from .browser import (click_generate, fill, generate, open_app, open_history_run, open_tab, set_number,
                      wait_for_history_row)
from .conftest import ARTIFACTS

# Words that stay as they are in the Chinese interface: product, format and unit names, the model and backend names
# the app shows, technical terms the Chinese text keeps beside its translation (logit lens, softmax), and the
# settings' own names (they are the API's parameters).
ALLOWED = {
    "api", "cpu", "gpu", "gradio", "hub", "id", "json", "jsonl", "csv", "txt", "markdown", "png", "svg", "npz", "onnx",
    "runtime", "pytorch", "torch", "llama", "cpp", "lora", "alpha", "dropout", "gltr", "playground", "top-k", "top-p",
    "mb", "kb", "ms", "utc", "bench", "models", "text", "wte", "wpe", "mlp", "gelu", "kv", "logit", "logits", "lens",
    "softmax", "captum", "tiny-zh", "tiny-copy", "cls", "sep", "unk", "pad", "mask", "tensorboard", "openvino", "nncf",
} | set(SETTING_NAMES) | set(AXES)
# Where model and user text is shown (tokens, prompts, outputs, other runs' prompts, JSON records): not the app speaking.
DATA = ", ".join([
    ".tokview .tok", ".tokview .unit", "textarea", "code", ".xtick", ".ytick", "#history-table tr[data-run-id]", "#records",
    "#history-run [data-testid='json']", ".json-holder", "#stats strong", "#history-run strong", "#steps-choices label",
])
DATA_INPUTS = ["model", "seed", "branch-token", "branch-alternative", "inside-position", "attention-query", "compare-model-a",
               "compare-model-b", "history-search", "sweep-cell", "sweep-x-values", "sweep-y-values", "ft-base", "ft-name",
               "steps-typed"]
WORD = re.compile(r"[A-Za-z][A-Za-z0-9_'’-]*")
ZH_TABS = ["generate", "attention", "inside", "compare", "sweep", "finetune", "benchmark", "history"]


def untranslated(page) -> list[str]:
    """English words in the text the page shows (and in its visible one-line fields), outside model and user text.
    A word with a digit or an underscore is a name (fp32, GPT-2, top_k), and one letter is no word."""
    shown = page.evaluate("""([data, dataInputs]) => {
        const out = [];
        const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
        for (let node = walker.nextNode(); node; node = walker.nextNode()) {
            const el = node.parentElement;
            if (!el || !node.textContent.trim() || el.closest('script, style') || el.closest(data)) continue;
            if (el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true})) out.push(node.textContent);
        }
        for (const input of document.querySelectorAll('input[type=text], input:not([type])')) {
            if (dataInputs.some(id => input.closest('#' + id))) continue;
            if (input.checkVisibility({checkOpacity: true, checkVisibilityCSS: true})) out.push(input.value);
        }
        return out;
    }""", [DATA, DATA_INPUTS])
    words = {w.strip("'’-") for line in shown for w in WORD.findall(line)}
    return sorted(w for w in words if len(w) > 1 and not re.search(r"[\d_]", w) and w.lower() not in ALLOWED)


def settled(page):
    """No event running: no Gradio status tracker is pending or generating."""
    page.wait_for_function("() => !document.querySelector('.wrap.pending, .wrap.generating')")


def test_every_tab_reads_chinese(zh_page):
    zh = zh_page
    assert zh.locator("#prompt textarea").input_value() == EN["generate.example_prompt"]  # the app's model is English
    run_id = generate(zh, ZH_CN["generate.example_prompt"], model="tiny-zh", seed="3", max_new_tokens=12)
    ready = {  # what each tab shows once it holds its content
        "generate": "#stats",
        "attention": "#attention-heads img",
        "inside": "#inside-funnel-table table",
        "compare": "#compare-run",
        "sweep": "#sweep-run",
        "finetune": "#ft-name",
        "benchmark": "#bench-run",
        "history": None,
    }
    found = {}
    ARTIFACTS.mkdir(exist_ok=True)
    for tab in ZH_TABS:
        open_tab(zh, tab)
        if tab == "history":
            wait_for_history_row(zh, run_id)
        else:
            zh.locator(ready[tab]).first.wait_for()
        if tab == "inside":
            zh.locator("#inside-grid .main-svg").first.wait_for()
        settled(zh)
        found[tab] = untranslated(zh)
        zh.screenshot(path=str(ARTIFACTS / f"zh-{tab}.png"), full_page=True)
    open_history_run(zh, run_id)  # the run's own view replaces the empty one
    settled(zh)
    found["history run"] = untranslated(zh)
    assert not any(found.values()), {tab: words for tab, words in found.items() if words}


def test_the_example_prompt_follows_the_model(zh_page, page):
    from playwright.sync_api import expect

    chinese, english = ZH_CN["generate.example_prompt"], EN["generate.example_prompt"]
    open_tab(zh_page, "sweep")
    expect(zh_page.locator("#sweep-prompt textarea")).to_have_value(english)  # a Chinese page, on the English model
    prompt = page.locator("#prompt textarea")
    expect(prompt).to_have_value(english)  # an English page on the English model
    box = page.locator("#model input")
    box.fill("tiny-zh")
    box.press("Enter")
    expect(prompt).to_have_value(chinese)  # the Chinese model: a Chinese example
    fill(prompt, "my own words")  # a prompt the user wrote stays when the model changes
    box.fill("tiny-copy")
    box.press("Enter")
    open_tab(page, "sweep")
    expect(page.locator("#sweep-prompt textarea")).to_have_value(english)  # the untouched example there follows it
    open_tab(page, "generate")
    expect(prompt).to_have_value("my own words")


def test_a_branch_shows_the_whole_run(zh_page):
    zh = zh_page
    fill(zh.locator("#prompt textarea"), "春风又绿江南岸，")
    set_number(zh, "samples", 2)
    parent_id = generate(zh, "春风又绿江南岸，", model="tiny-zh", seed="5", max_new_tokens=10)
    zh.locator("#samples-view .sample").nth(1).wait_for()
    fill(zh.locator("#prompt textarea"), "另一个还没运行的提示词")  # the box no longer holds the branch's prompt
    zh.get_by_text(text("generate.branch", "zh-CN")).click()
    zh.locator("#branch-token input").click()
    zh.get_by_role("option", name=re.compile(r"^3: ")).click()
    zh.wait_for_function("() => /\\(\\d/.test(document.querySelector('#branch-alternative input')?.value || '')")
    alternative = zh.locator("#branch-alternative input").input_value()  # "id: text (p%)"
    zh.locator("#branch-token input").click()  # the kept tokens, as the token list names them: "0: 字"
    kept = "".join(zh.get_by_role("option", name=re.compile(rf"^{i}: ")).inner_text().split(": ", 1)[1] for i in range(3))
    zh.locator("#branch-token input").press("Escape")
    branch_id = click_generate(zh, "#branch-btn")
    assert branch_id != parent_id and text("stats.parent_run", "zh-CN", id=parent_id) in zh.locator("#stats").inner_text()
    output = zh.locator("#output textarea").input_value()
    swapped = alternative.split(": ", 1)[1].rsplit(" (", 1)[0]
    assert zh.locator("#prompt textarea").input_value() == "春风又绿江南岸，"
    assert output.startswith(kept + swapped), (output, kept, swapped)
    assert zh.locator("#token-view .diverge").count() == 1  # the swapped-in token, outlined
    assert zh.locator("#samples-view .sample").count() == 0 and not zh.locator("#open-sample").is_visible()
    zh.screenshot(path=str(ARTIFACTS / "zh-branch.png"), full_page=True)


def test_benchmark_checks_its_numbers_at_the_box_and_counts_in_chinese(zh_page, capfd):
    zh = zh_page
    open_tab(zh, "benchmark")
    fill(zh.locator("#bench-new input"), "1")
    zh.locator("#bench-run").click()
    message = text("bench.new_range", "zh-CN", most=48, context=64)
    zh.locator("#bench-new").get_by_text(message).wait_for()
    # One message, at the box: no error notice, and no pane marked 错误 ("Error"), since nothing ran.
    assert zh.locator(".toast-item").count() == 0 and zh.get_by_text("错误", exact=True).count() == 0
    assert "Traceback" not in capfd.readouterr().err
    for label in ("onnx fp32 (cpu)", "onnx int8 (cpu)", "onnx int4 (cpu)"):  # torch alone: quick
        zh.locator("#bench-cells").get_by_label(label).uncheck()
    zh.locator("#bench-peer").get_by_role("checkbox").uncheck()
    zh.locator("#bench-batch").get_by_label("4", exact=True).check()
    fill(zh.locator("#bench-new input"), "40")
    zh.evaluate("""() => {
        window.progressSeen = [];
        new MutationObserver(() => window.progressSeen.push(document.body.innerText.match(/\\d+\\/\\d+[^\\n|]*/g) || []))
            .observe(document.body, {subtree: true, childList: true, characterData: true});
    }""")
    zh.locator("#bench-run").click()
    zh.wait_for_function("() => /个测试单元/.test(document.querySelector('#bench-status')?.innerText || '')", timeout=180_000)
    seen = {s.strip() for batch in zh.evaluate("window.progressSeen") for s in batch}
    unit = text("bench.progress_unit", "zh-CN")
    assert f"1/2 {unit}" in seen or f"0/2 {unit}" in seen, seen
    assert not any("cell" in s for s in seen), seen
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("locale", ["zh-CN", "en-US"])
def test_gradios_api_page_opens(browser, launched_app, locale):
    context, other = open_app(browser, launched_app, locale)
    lang = "zh-CN" if locale == "zh-CN" else "en"
    other.locator("footer").get_by_text({"zh-CN": "通过 API 使用", "en": "Use via API"}[lang]).click()
    other.get_by_text('api_name="/generate"').first.wait_for()
    other.get_by_text('api_name="/inside"').first.wait_for()
    other.screenshot(path=str(ARTIFACTS / f"api-page-{lang}.png"), full_page=True)
    context.close()
