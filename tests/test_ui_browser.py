"""The whole UI in real headless Chromium: generate and watch it stream, token view, ONNX, attention, history,
reuse, compare, branch, benchmark, and the login page. Each test has its own page (tests/conftest.py) and makes the
runs it reads, found by their ids. Screenshots of each step go to test-artifacts/."""

import re

import pytest

from .browser import (CHOSE_GENERATE, LONG_MS, click_generate, fill, generate, history_row, open_app, open_history_run, open_tab,
                      set_number, wait_for_history_row, wait_for_notice)
from .conftest import ARTIFACTS


def test_generate_shows_text_stats_and_token_view(page):
    hostile = '<img src=x onerror="window.pwned=1">'
    fill(page.locator("#prompt textarea"), f"The value {hostile}")
    fill(page.locator("#seed input, #seed textarea").first, "5")
    set_number(page, "max-new-tokens", 12)
    from playwright.sync_api import expect

    expect(page.locator("#prompt textarea")).to_have_value(f"The value {hostile}")
    # Record what the page shows while the run streams: every change of the stats, with the output at that moment.
    page.evaluate("""() => {
        window.seen = [];
        const stats = document.querySelector('#stats');
        new MutationObserver(() => window.seen.push([stats.innerText, document.querySelector('#output textarea').value]))
            .observe(stats, {subtree: true, childList: true, characterData: true});
    }""")
    run_id = click_generate(page)
    output = page.locator("#output textarea").input_value()
    assert len(output) > 0 and f"saved as run #{run_id}" in page.locator("#stats").inner_text()
    partial = [text for stats, text in page.evaluate("window.seen") if "generating" in stats and text]
    assert partial and all(output.startswith(text) for text in partial)  # streamed: text shown before the run ended
    stats = page.locator("#stats").inner_text()
    assert "tokens/s" in stats and "time to first token" in stats and "prompt perplexity" in stats and "seed 5" in stats
    view = page.locator("#token-view")
    assert hostile in view.inner_text()  # shown as text ...
    assert view.locator("img").count() == 0  # ... never as markup
    assert page.evaluate("window.pwned") is None
    tokens = view.locator(".tok:not(.prompt)")
    assert tokens.count() > 0
    tokens.nth(0).hover()
    tip = tokens.nth(0).locator(".tip")
    assert tip.is_visible() and "rank" in tip.inner_text() and "%" in tip.inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "generate-tab.png"), full_page=True)


def test_rank_colour_mode_shows_its_legend(page):
    generate(page, "The value of")
    page.get_by_label("Rank (GLTR)").check()
    page.wait_for_function("() => document.body.innerText.includes('Rank of the chosen token (GLTR)')")
    assert page.locator("#token-view .tok").count() > 0


def test_switching_to_onnx_generates_on_onnx_runtime(page):
    page.locator("#backend").get_by_label("ONNX Runtime").check()
    click_generate(page)  # the first ONNX run exports the model
    stats = page.locator("#stats").inner_text()
    assert "onnx fp32" in stats and "CPUExecutionProvider" in stats
    page.screenshot(path=str(ARTIFACTS / "generate-tab-onnx.png"), full_page=True)


def test_history_shows_a_new_run_and_reuse_reproduces_its_output(page):
    from playwright.sync_api import expect

    hostile = '<img src=x onerror="window.pwned=1">'
    run_id = generate(page, f"The value {hostile}", seed="5", max_new_tokens=12)
    open_tab(page, "history")  # opening the tab lists the newest runs, this one among them
    row = wait_for_history_row(page, run_id)
    assert page.locator("#history-table img").count() == 0  # the <img> prompt is text in the table too
    assert hostile in row.inner_text() and "torch" in row.inner_text()
    open_history_run(page, run_id)
    saved_output = page.locator("#history-output textarea").input_value()
    assert saved_output
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "history-tab.png"), full_page=True)

    page.locator("#history-use").click()
    expect(page.locator("#prompt textarea")).to_have_value(f"The value {hostile}")
    expect(page.locator("#seed input, #seed textarea").first).to_have_value("5")
    click_generate(page)
    assert "torch fp32" in page.locator("#stats").inner_text()
    assert page.locator("#output textarea").input_value() == saved_output
    assert page.evaluate("window.pwned") is None
    page.screenshot(path=str(ARTIFACTS / "reuse-settings.png"), full_page=True)


def test_history_opens_at_once_on_a_full_page_and_follows_runs_saved_elsewhere(page, app_history):
    """A full page of runs (PAGE_SIZE) shows as soon as the tab opens: the Gradio Dataframe it replaced took 45 to 76 s
    for 200 runs and minutes on a loaded machine (issue 24's flake). A run saved by another client while the tab is open
    appears without reopening it; Enter on a row opens that run, as a click does."""
    from playwright.sync_api import expect

    from playground.ui.history_tab import PAGE_SIZE

    from .conftest import last_run_id

    mine = app_history.get(generate(page, "a run to copy", max_new_tokens=4))
    row = {key: mine[key] for key in ("model", "backend", "variant", "output", "settings", "metrics", "tokens", "status")}
    first = last_run_id(app_history) + 1
    for i in range(PAGE_SIZE):
        app_history.save_run(row | {"prompt": f"<b>第 {i} 行</b> & row {i}"})
    newest = last_run_id(app_history)
    open_tab(page, "history")
    expect(history_row(page, newest)).to_be_visible(timeout=30_000)
    assert page.locator("#history-table tr[data-run-id]").count() == PAGE_SIZE
    assert history_row(page, first).count() == 1  # the 200th newest is there too
    assert page.locator("#history-table b").count() == 0  # prompts are text, never markup
    assert f"<b>第 {PAGE_SIZE - 1} 行</b> & row {PAGE_SIZE - 1}" in history_row(page, newest).inner_text()

    later = app_history.save_run(row | {"prompt": "saved by another client"})
    expect(history_row(page, later)).to_be_visible(timeout=30_000)  # within POLL_S, the tab never left
    history_row(page, later).focus()
    page.keyboard.press("Enter")
    expect(page.locator("#history-run")).to_contain_text(f"#{later}")
    expect(page.locator("#history-output textarea")).to_have_value(mine["output"])


def test_attention_tab_shows_the_last_runs_attention(page):
    generate(page, "<img src=x onerror=window.pwned=2> object")  # the first tick is always labelled
    assert page.locator("#token-view").inner_text().startswith("<img")
    open_tab(page, "attention")
    page.wait_for_function("() => /Computed by/.test(document.querySelector('#attention-status')?.innerText || '')")
    heatmap = page.locator("#attention-heatmap")
    heatmap.locator(".ytick").first.wait_for()
    ticks = heatmap.locator(".ytick").all_text_contents()
    assert ticks[0].startswith("<") and "&lt;" not in " ".join(ticks), ticks  # the "<" token's label, as text
    assert page.locator("#attention-heatmap img, #attention-heatmap image[href='x']").count() == 0
    assert page.evaluate("window.pwned") is None
    page.locator("#attention-heads img").wait_for()
    page.screenshot(path=str(ARTIFACTS / "attention-tab.png"), full_page=True)
    page.get_by_role("button", name="Attention tensor (.npz)").click()
    page.locator("#attention-download a").first.wait_for()


def test_history_run_opens_in_the_attention_tab_computed_by_its_backend(page):
    page.locator("#backend").get_by_label("ONNX Runtime").check()
    run_id = generate(page, "An ONNX run for the attention tab", seed="6")
    open_tab(page, "history")
    backend_filter = page.locator("#history-backend input")
    backend_filter.fill("onnx")
    backend_filter.press("Enter")  # a user filters the table down to ONNX runs
    open_history_run(page, run_id)
    assert "onnx fp32" in history_row(page, run_id).inner_text()
    page.locator("#history-attention").click()
    page.wait_for_function("() => /Computed by onnx fp32/.test(document.querySelector('#attention-status')?.innerText || '')")
    assert page.get_by_role("tab", name="Attention").get_attribute("aria-selected") == "true"


def run_compare(page, done=r"Identical output|First divergence|Different tokenizers"):
    """Click Compare and wait until the summary shows this comparison's outcome (`done`, a regex), not the last one's."""
    page.evaluate("""() => {
        window.compareObserver?.disconnect();
        window.compareSeen = [];
        const summary = document.querySelector('#compare-summary');
        window.compareObserver = new MutationObserver(() => window.compareSeen.push(summary.innerText));
        window.compareObserver.observe(summary, {subtree: true, childList: true, characterData: true});
    }""")
    page.locator("#compare-run").click()
    # The old outcome stays on show (under Gradio's timer) until the first "Running side A" replaces it.
    page.wait_for_function("""done => {
        const seen = window.compareSeen, started = seen.findIndex(text => /Running side|正在运行/.test(text));
        return started >= 0 && seen.slice(started).some(text => new RegExp(done).test(text));
    }""", arg=done)


def choose_side(page, side, model=None, backend=None, variant=None):
    """Set one side of the Compare tab: its model (typed, as a user may), backend ("PyTorch"/"ONNX Runtime") and variant."""
    if model is not None:
        box = page.locator(f"#compare-model-{side} input")
        box.fill(model)
        box.press("Enter")
    if backend is not None:
        page.locator(f"#compare-backend-{side}").get_by_label(backend).check()
    if variant is not None:
        box = page.locator(f"#compare-variant-{side} input")
        box.fill(variant)
        box.press("Enter")


def test_compare_tab_runs_both_backends_side_by_side(page):
    fill(page.locator("#prompt textarea"), "The value <b>of</b>")
    fill(page.locator("#seed input, #seed textarea").first, "3")
    page.get_by_role("tab", name="Compare").click()
    # The defaults: the app's model on PyTorch against the same model on ONNX int8.
    from playwright.sync_api import expect

    expect(page.locator("#compare-model-a input")).to_have_value("tiny-gpt2")
    expect(page.locator("#compare-model-b input")).to_have_value("tiny-gpt2")
    expect(page.locator("#compare-backend-b").get_by_label("ONNX Runtime")).to_be_checked()
    expect(page.locator("#compare-variant-b input")).to_have_value("int8")
    choose_side(page, "b", variant="fp32")
    run_compare(page)
    summary = page.locator("#compare-summary").inner_text()
    assert "Identical output" in summary  # fp32 ONNX = PyTorch, same seed
    assert "tiny-gpt2 · torch fp32" in summary and "tiny-gpt2 · onnx fp32" in summary and "seed on both sides: 3" in summary
    assert "torch fp32" in page.locator("#compare-stats-a").inner_text()
    assert "onnx fp32" in page.locator("#compare-stats-b").inner_text()
    assert "<b>of</b>" in page.locator("#compare-view-a").inner_text()  # as text
    # Injected markup would be a <b> in the view or a token; the tooltip's own <b> heading lives in .tip.
    assert page.locator("#compare-view-a .tokview > b, #compare-view-a .tok > b, #compare-view-b .tok > b").count() == 0
    legend = page.evaluate("() => Array.from(document.querySelectorAll('#compare-plot .legendtext')).map(t => t.textContent)")
    assert any("A · tiny-gpt2 · torch fp32" in name for name in legend) and any("B · tiny-gpt2 · onnx fp32" in name for name in legend)
    page.screenshot(path=str(ARTIFACTS / "compare-tab.png"), full_page=True)
    # Swapping the sides swaps everything that names a side.
    page.locator("#compare-swap").click()
    expect(page.locator("#compare-backend-a").get_by_label("ONNX Runtime")).to_be_checked()
    expect(page.locator("#compare-variant-a input")).to_have_value("fp32")
    expect(page.locator("#compare-backend-b").get_by_label("PyTorch")).to_be_checked()
    page.locator("#compare-swap").click()
    expect(page.locator("#compare-backend-a").get_by_label("PyTorch")).to_be_checked()


def test_compare_two_models_with_the_same_weights_and_a_drawn_seed(page, models_root):
    """tiny-gpt2 vs tiny-copy (the same weights under another name), seed left empty: one seed drawn for both, shown,
    and identical output. A model folder that appears while the app runs is offered when the tab opens."""
    import shutil

    later = models_root / "tiny-later"
    try:
        fill(page.locator("#prompt textarea"), "The value of")
        fill(page.locator("#seed input, #seed textarea").first, "")
        shutil.copytree(models_root / "tiny-copy", later)  # e.g. a fine-tuned model, saved while the app runs
        page.get_by_role("tab", name="Compare").click()
        page.locator("#compare-model-b input").click()
        page.get_by_role("option", name="tiny-later").wait_for()
        page.keyboard.press("Escape")
    finally:
        shutil.rmtree(later, ignore_errors=True)
    choose_side(page, "b", model="tiny-copy", backend="PyTorch")
    run_compare(page)
    summary = page.locator("#compare-summary").inner_text()
    assert "Identical output" in summary and "tiny-gpt2 · torch" in summary and "tiny-copy · torch" in summary
    seed = re.search(r"seed on both sides: (\d+)", summary).group(1)
    for stats in ("#compare-stats-a", "#compare-stats-b"):
        assert f"seed {seed}" in page.locator(stats).inner_text()
    assert page.locator("#compare-plot").is_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "compare-en.png"), full_page=True)


def test_compare_models_with_different_tokenizers_shows_both_outputs_and_a_note(zh_page):
    """tiny-gpt2 (byte-level BPE) vs tiny-zh (a character BertTokenizer), in a Chinese browser: no divergence or
    probability plot, a note in Chinese, both outputs side by side."""
    from playwright.sync_api import expect

    from playground.ui.i18n import t

    zh = zh_page
    fill(zh.locator("#prompt textarea"), "床前明月光，")
    fill(zh.locator("#seed input, #seed textarea").first, "4")
    set_number(zh, "max-new-tokens", 16)
    zh.get_by_role("tab", name="对比").click()
    expect(zh.locator("#compare-run")).to_have_text(t("compare.run", "zh-CN"))
    choose_side(zh, "b", model="tiny-zh", backend="PyTorch")
    run_compare(zh, "分词器不同")
    summary = zh.locator("#compare-summary").inner_text()
    assert "tiny-gpt2 · torch" in summary and "tiny-zh · torch" in summary and "两侧使用同一个种子：4" in summary
    assert "首次出现分歧" not in summary and "输出完全一致" not in summary
    assert not zh.locator("#compare-plot").is_visible()
    assert zh.locator("#compare-view-a .tok:not(.prompt)").count() > 0 and zh.locator("#compare-view-b .tok:not(.prompt)").count() > 0
    assert "床前明月光" in zh.locator("#compare-view-b").inner_text()
    assert zh.locator("#compare-view-a .diverge, #compare-view-b .diverge").count() == 0
    zh.screenshot(path=str(ARTIFACTS / "compare-zh-tokenizers.png"), full_page=True)
    # The same model on PyTorch and ONNX int8 (the defaults), in Chinese: divergence or not, the plot is back.
    choose_side(zh, "b", model="tiny-gpt2", backend="ONNX Runtime", variant="int8")
    run_compare(zh, "输出完全一致|首次出现分歧")
    assert zh.locator("#compare-plot").is_visible()
    assert "tiny-gpt2 · onnx int8" in zh.locator("#compare-summary").inner_text()
    zh.screenshot(path=str(ARTIFACTS / "compare-zh.png"), full_page=True)


def test_branching_from_an_alternative_continues_and_is_saved(page):
    parent_id = generate(page, "The value of")
    page.get_by_text("Branch from an alternative").click()
    page.locator("#branch-token input").click()
    page.get_by_role("option", name=re.compile(r"^2: ")).click()
    page.wait_for_function("() => /\\(\\d/.test(document.querySelector('#branch-alternative input')?.value || '')")
    branch_id = click_generate(page, "#branch-btn")
    assert branch_id != parent_id
    assert f"branched from run #{parent_id}" in page.locator("#stats").inner_text()
    page.screenshot(path=str(ARTIFACTS / "branch.png"), full_page=True)


def test_benchmark_tab_runs_a_small_benchmark(page, monkeypatch):
    # The app is served from this process and reads the peers' pythons at each run: none of them here (CI's python has
    # ctranslate2; tests/test_bench_peers.py runs it)
    monkeypatch.setenv("PLAYGROUND_CT2_PYTHON", "/nonexistent/python")
    monkeypatch.delenv("PLAYGROUND_OPENVINO_PYTHON", raising=False)
    page.get_by_role("tab", name="Benchmark").click()
    for label in ("onnx fp32 (cpu)", "onnx int4 (cpu)"):  # keep it small: torch fp32 and onnx int8
        page.locator("#bench-cells").get_by_label(label).uncheck()
    fill(page.locator("#bench-new input"), "8")
    page.locator("#bench-run").click()
    page.wait_for_function("() => /cells on/.test(document.querySelector('#bench-status')?.innerText || '')")
    rows = page.locator("#bench-table .virtual-row")
    assert rows.count() == 2
    # no peer configured for the test app: each is one line saying how to get it
    status = page.locator("#bench-status").inner_text()
    assert "pip install llama-cpp-python" in status and 'pip install -e ".[peers]"' in status and ".venv-openvino" in status
    assert "tokens/s" in page.locator("#bench-speed").inner_text()
    page.locator("#bench-files a").first.wait_for()
    assert page.locator("#bench-files a").count() == 4
    page.screenshot(path=str(ARTIFACTS / "benchmark-tab.png"), full_page=True)


def test_a_model_from_the_models_folder_can_be_chosen(page):
    generate(page, "The value", model="tiny-copy")
    assert "tiny-copy · torch" in page.locator("#stats").inner_text()
    model = page.locator("#model input")
    model.fill("/etc")
    model.press("Enter")
    wait_for_notice(page, "cannot be chosen here", page.locator("#generate-btn").click)
    page.screenshot(path=str(ARTIFACTS / "model-refused.png"), full_page=True)


def test_login_page_guards_the_app(browser, app_with_login):
    context = browser.new_context(viewport={"width": 1000, "height": 700})  # its own cookies
    context.set_default_timeout(LONG_MS)
    context.add_init_script(CHOSE_GENERATE)
    login = context.new_page()
    login.goto(app_with_login)
    login.get_by_label("username").fill("alice")
    login.get_by_label("password").fill("wrong")
    login.get_by_role("button", name="Login").click()
    login.get_by_text("Incorrect credentials").wait_for()
    login.screenshot(path=str(ARTIFACTS / "login.png"))
    login.get_by_label("username").fill("alice")  # a failed attempt clears the form
    login.get_by_label("password").fill("correct horse")
    login.get_by_role("button", name="Login").click()
    login.locator("#session-banner").get_by_text("Logged in as alice").wait_for()
    login.locator("#generate-btn").wait_for()
    context.close()


@pytest.mark.parametrize("locale", ["zh-CN", "en-US"])
def test_the_interface_speaks_the_browsers_language(browser, launched_app, locale):
    """Labels come from Gradio's i18n in the browser; choices, notes and errors from the server, in the same language."""
    from playwright.sync_api import expect

    from playground.ui.i18n import t

    lang = "zh-CN" if locale.startswith("zh") else "en"
    context, other = open_app(browser, launched_app, locale)
    for tab in ("app.tab.generate", "app.tab.attention", "app.tab.compare", "app.tab.benchmark", "app.tab.history"):
        expect(other.get_by_role("tab", name=t(tab, lang))).to_be_visible()
    expect(other.locator("#prompt")).to_contain_text(t("generate.prompt", lang))
    expect(other.locator("#generate-btn")).to_have_text(t("generate.generate", lang))
    expect(other.get_by_label(t("generate.colour_rank", lang))).to_be_visible()  # a choice label, set by the server
    body = other.locator("body").inner_text()
    for key in ("generate.max_new_tokens", "generate.temperature", "generate.do_sample", "generate.seed", "generate.colour_by",
                "generate.advanced"):
        assert t(key, lang) in body, key
        if lang != "en":
            assert t(key, "en") not in body, key  # no English left beside the Chinese
    # A domain error raised by the settings, shown in the browser's language.
    fill(other.locator("#seed input, #seed textarea").first, "abc")
    message = t("settings.not_int", lang, name=t("setting.seed", lang), value="abc")
    wait_for_notice(other, message, other.locator("#generate-btn").click)
    ARTIFACTS.mkdir(exist_ok=True)
    other.screenshot(path=str(ARTIFACTS / f"ui-{locale}.png"), full_page=True)
    context.close()


def test_chinese_prompts_read_right_on_a_chinese_model_and_on_the_english_one(zh_page):
    """A zh-CN browser, Chinese prompts on the Chinese model (WordPiece) and on the English one (byte-level BPE):
    no U+FFFD in the page, the hover cards or the attention labels; no spaces between Chinese characters."""
    from playwright.sync_api import expect

    zh = zh_page
    expect(zh.get_by_role("tab", name="生成")).to_be_visible()
    for model, prompt in (("tiny-zh", "床前明月光，"), ("tiny-gpt2", "注意力机制 café 🙂 👨‍👩‍👧")):
        generate(zh, prompt, seed="3", model=model, max_new_tokens=16)
        assert f"{model} · torch" in zh.locator("#stats").inner_text()
        view = zh.locator("#token-view")
        shown = view.evaluate("v => { const c = v.cloneNode(true); c.querySelectorAll('.tip').forEach(t => t.remove()); return c.textContent; }")
        assert prompt[:2] in shown, shown  # two Chinese characters side by side, no space between them
        first = view.locator(".unit, .tok").nth(1)
        first.hover()
        zh.screenshot(path=str(ARTIFACTS / f"zh-CN-{model}.png"), full_page=True)
        tips = view.evaluate("v => Array.from(v.querySelectorAll('.tip')).map(t => t.textContent).join('\\n')")
        assert "\ufffd" not in tips and "排名" in tips  # the cards speak Chinese too
        assert "\ufffd" not in zh.locator("body").inner_text()
        output = zh.locator("#output textarea").input_value()
        assert "\ufffd" not in output and not re.search(r"[\u4e00-\u9fff] [\u4e00-\u9fff]", output), output
        zh.get_by_role("tab", name="注意力").click()
        zh.locator("#attention-status").get_by_text("计算").first.wait_for()
        labels = zh.evaluate("() => Array.from(document.querySelectorAll('#attention-heatmap .xtick text')).map(t => t.textContent)")
        assert labels and not any("\ufffd" in label for label in labels)
        zh.screenshot(path=str(ARTIFACTS / f"zh-CN-attention-{model}.png"), full_page=True)
        zh.get_by_role("tab", name="生成").click()


def training_text_file(tmp_path):
    """A few KB of a style the tiny model never saw: the GPL's legal prose (Python's own licence where Debian's is missing)."""
    import sysconfig
    from pathlib import Path

    gpl = Path("/usr/share/common-licenses/GPL-3")
    source = gpl if gpl.is_file() else Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"
    path = tmp_path / "licence.txt"
    path.write_text(source.read_text(encoding="utf-8")[:6000], encoding="utf-8")
    return path


def test_finetune_tab_from_upload_to_a_comparison_with_the_base(page, tmp_path):
    """Upload a text, check it, fine-tune the tiny model for 20 steps to a new name, see perplexity before -> after,
    find the new model in the Generate tab's list, and compare base and fine-tuned in the Compare tab."""
    import uuid

    from playwright.sync_api import expect

    name = f"ft-{uuid.uuid4().hex[:8]}"
    page.get_by_role("tab", name="Fine-tune").click()
    page.locator("#ft-upload input[type=file]").set_input_files(str(training_text_file(tmp_path)))
    # The file shows at once; Check and Start can use it once the server has read it, which the line under it says.
    expect(page.locator("#ft-upload-info")).to_have_text(re.compile(r"Read licence\.txt \(5\.\d KB\): Check and Start use it\."))
    fill(page.locator("#ft-block input"), "32")
    page.locator("#ft-check").click()
    page.locator("#ft-preview").get_by_text("First examples").wait_for()
    preview = page.locator("#ft-preview").inner_text()
    assert "licence.txt" in preview and "utf-8" in preview and "Blocks of 32 tokens" in preview
    assert "GNU GENERAL PUBLIC LICENSE" in preview or "Python" in preview
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "finetune-check.png"), full_page=True)

    fill(page.locator("#ft-name input, #ft-name textarea").first, name)
    fill(page.locator("#ft-max-steps input"), "20")
    fill(page.locator("#ft-lr input, #ft-lr textarea").first, "3e-3")  # the tiny model learns fast at a large rate
    page.locator("#ft-start").click()
    page.locator("#ft-progress").get_by_text(f"{name} (from tiny-gpt2)").wait_for()
    page.screenshot(path=str(ARTIFACTS / "finetune-running.png"), full_page=True)
    page.locator("#ft-result").get_by_text("Validation perplexity").wait_for()
    result = page.locator("#ft-result").inner_text()
    before, after = map(float, re.search(r"perplexity: ([\d.]+) → ([\d.]+)", result).groups())
    assert after < before and name in result
    assert "step 20 / 20" in page.locator("#ft-progress").inner_text()
    assert page.locator("#ft-plot .scatterlayer .trace").count() == 2  # training and validation loss
    page.locator("#ft-compare").wait_for()
    page.screenshot(path=str(ARTIFACTS / "finetune-done.png"), full_page=True)

    page.locator("#ft-compare").click()
    expect(page.get_by_role("tab", name="Compare")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#compare-model-a input")).to_have_value("tiny-gpt2")
    expect(page.locator("#compare-model-b input")).to_have_value(name)
    expect(page.locator("#compare-backend-b").get_by_label("PyTorch")).to_be_checked()
    run_compare(page)
    summary = page.locator("#compare-summary").inner_text()
    assert "tiny-gpt2 · torch" in summary and f"{name} · torch" in summary
    assert page.locator("#compare-view-a .tok:not(.prompt)").count() > 0 and page.locator("#compare-view-b .tok:not(.prompt)").count() > 0
    page.screenshot(path=str(ARTIFACTS / "finetune-compare.png"), full_page=True)

    page.get_by_role("tab", name="Generate").click()  # the new model is offered in the Generate tab too
    page.locator("#model input").click()
    page.get_by_role("option", name=name).wait_for()
    page.keyboard.press("Escape")


def test_a_refused_upload_takes_the_place_of_the_file_before_it(page, tmp_path):
    """A good file, cleared, then a binary one: the second is refused with a notice, the line under the upload no
    longer says a file was read, and Check says the file was not read (before, it checked the empty pasted text)."""
    from playwright.sync_api import expect

    from playground.ui.i18n import t

    page.get_by_role("tab", name="Fine-tune").click()
    page.locator("#ft-upload input[type=file]").set_input_files(str(training_text_file(tmp_path)))
    expect(page.locator("#ft-upload-info")).to_contain_text("Read licence.txt")
    binary = tmp_path / "notes.txt"
    binary.write_bytes(b"\x00\x01\x02binary" * 100)
    page.locator("#ft-upload").get_by_role("button", name="Clear").click()
    wait_for_notice(page, "binary", lambda: page.locator("#ft-upload input[type=file]").set_input_files(str(binary)))
    expect(page.locator("#ft-upload-info")).not_to_contain_text("Read")
    wait_for_notice(page, t("finetune.upload_not_read", "en"), page.locator("#ft-check").click)


def test_finetune_tab_speaks_chinese_and_shows_the_last_job_to_another_browser(zh_page):
    """A second, zh-CN browser: the tab's labels in Chinese, the last job (from the test above, or none) rendered in
    Chinese by the server, and an engine error in Chinese."""
    from playwright.sync_api import expect

    from playground.ui.i18n import t

    zh = zh_page
    zh.get_by_role("tab", name=t("app.tab.finetune", "zh-CN")).click()
    expect(zh.locator("#ft-check")).to_have_text(t("finetune.check", "zh-CN"))
    expect(zh.locator("#ft-start")).to_have_text(t("finetune.start", "zh-CN"))
    expect(zh.locator("#ft-method")).to_contain_text(t("finetune.method_full", "zh-CN"))  # a choice label, from the server
    body = zh.locator("body").inner_text()
    for key in ("finetune.base", "finetune.name", "finetune.paste", "finetune.method_label", "finetune.learning_rate",
                "finetune.max_steps", "finetune.block_label", "finetune.lora"):
        assert t(key, "zh-CN") in body and t(key, "en") not in body, key
    zh.wait_for_function("() => /任务 #|还没有微调任务/.test(document.querySelector('#ft-progress')?.innerText || '')")
    fill(zh.locator("#ft-text textarea"), "一段很短的文字。")
    fill(zh.locator("#ft-name input, #ft-name textarea").first, "../escape")
    wait_for_notice(zh, "是一个路径", zh.locator("#ft-start").click)
    zh.screenshot(path=str(ARTIFACTS / "finetune-zh-CN.png"), full_page=True)


def test_a_cancelled_fine_tune_resumes_from_its_checkpoint_in_chinese(zh_page, tmp_path):
    """zh-CN: start a long job, cancel it (a checkpoint is kept, and the result says how to go on), find it under Stopped
    jobs, resume it from that step, and cancel again; every text of the way in Chinese."""
    import uuid

    from playwright.sync_api import expect

    from playground.ui.i18n import t

    zh, name = zh_page, f"resume-{uuid.uuid4().hex[:8]}"
    zh.get_by_role("tab", name=t("app.tab.finetune", "zh-CN")).click()
    zh.locator("#ft-upload input[type=file]").set_input_files(str(training_text_file(tmp_path)))
    expect(zh.locator("#ft-upload-info")).to_contain_text("已读取 licence.txt")
    fill(zh.locator("#ft-block input"), "32")
    fill(zh.locator("#ft-name input, #ft-name textarea").first, name)
    fill(zh.locator("#ft-max-steps input"), "100000")  # far more than the test waits for: it is cancelled
    progress = zh.locator("#ft-progress")
    running = "() => document.querySelector('#ft-progress .ft-job')?.dataset.status === 'running' && /训练损失/.test(document.querySelector('#ft-progress').innerText)"
    zh.locator("#ft-start").click()
    zh.wait_for_function(running)  # training, with a loss to show
    # The notice reaches the page (a Cancel that skipped the queue had it printed on the server's console instead).
    wait_for_notice(zh, t("finetune.cancelling", "zh-CN"), zh.locator("#ft-cancel").click)
    zh.wait_for_function("() => document.querySelector('#ft-progress .ft-job')?.dataset.status === 'cancelled'")
    step = int(re.search(r"检查点在第 (\d+) 步", progress.inner_text()).group(1))
    assert step >= 1
    result = zh.locator("#ft-result")
    expect(result).to_contain_text(t("finetune.cancelled", "zh-CN"))
    expect(result).to_contain_text(t("finetune.resume_hint", "zh-CN", step=step))
    stopped = zh.locator("#ft-stopped")
    expect(stopped).to_be_visible()
    expect(stopped.locator("input")).to_have_value(t("finetune.stopped_job", "zh-CN", name=name, base="tiny-gpt2", step=step,
                                                     total=100000))
    zh.screenshot(path=str(ARTIFACTS / "finetune-stopped-zh-CN.png"), full_page=True)

    wait_for_notice(zh, t("finetune.resumed", "zh-CN", name=name, step=step, total=100000), zh.locator("#ft-resume").click)
    zh.wait_for_function(running)
    zh.wait_for_function(f"() => /第 (\\d+) \\/ 100000 步/.exec(document.querySelector('#ft-progress').innerText)?.[1] > {step}")
    zh.locator("#ft-cancel").click()
    zh.wait_for_function("() => document.querySelector('#ft-progress .ft-job')?.dataset.status === 'cancelled'")
    assert "Stopped jobs" not in zh.locator("body").inner_text() and "Resume" not in zh.locator("#ft-resume").inner_text()
