"""The Experiments tab in a browser, in English and Chinese: a head scan, a patching preset and a steered generation on
the tiny model, and a refusal in the page's language. Every wait is on something the page shows."""

from __future__ import annotations

import pytest

from playground.locales import text

from .browser import fill, open_app, wait_for_notice
from .conftest import ARTIFACTS, free_port


@pytest.fixture(scope="module")
def experiments_app(tiny_source, tmp_path_factory):
    """The app on the tiny model alone, its history in a temporary folder."""
    from playground.history import HistoryStore
    from playground.service import Playground
    from playground.ui.app import build_demo, launch_kwargs

    folder = tmp_path_factory.mktemp("experiments-app")
    playground = Playground(tiny_source, device="cpu", history=HistoryStore(folder / "history.db"), models_root=folder)
    demo = build_demo(playground)
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **launch_kwargs())
    yield demo.local_url, playground
    demo.close()


@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_experiments_tab(browser, experiments_app, locale):
    from playwright.sync_api import expect

    url, playground = experiments_app
    lang = "zh-CN" if locale == "zh-CN" else "en"
    context, page = open_app(browser, url, locale)
    try:
        page.get_by_role("tab", name=text("app.tab.experiments", lang)).click()

        # Head scan on the induction test: a grid of layers x heads, and the status line in the page's language.
        page.get_by_role("tab", name=text("experiments.tab.scan", lang)).click()
        page.locator("#exp-scan-induction").click()
        expect(page.locator("#exp-scan-target textarea")).not_to_have_value("")
        page.locator("#exp-scan-btn").click()
        expect(page.locator("#exp-scan-status")).to_contain_text(text("experiments.scan_done", lang, heads=4, tokens=19))  # 2 x 2 heads
        page.locator("#exp-scan-plot .js-plotly-plot").wait_for()

        # A patching preset (the induction test), and a refusal of prompts of different lengths.
        page.get_by_role("tab", name=text("experiments.tab.patch", lang)).click()
        page.locator("#exp-patch-preset input").click()
        page.get_by_role("option", name=text("experiments.preset.induction", lang)).click()
        page.locator("#exp-patch-use").click()
        expect(page.locator("#exp-clean textarea")).not_to_have_value("")
        page.locator("#exp-patch-btn").click()
        page.locator("#exp-patch-plot .js-plotly-plot").wait_for()
        expect(page.locator("#exp-patch-plot")).to_contain_text(text("experiments.axis.position", lang))
        fill(page.locator("#exp-corrupted textarea"), "short")
        short = len(playground.source.codec.encode("short"))
        wait_for_notice(page, text("experiments.lengths", lang, clean=19, corrupted=short),
                        lambda: page.locator("#exp-patch-btn").click())

        # Steering: the plain and the steered text side by side, both saved.
        page.get_by_role("tab", name=text("experiments.tab.steer", lang)).click()
        page.locator("#exp-steer-use").click()
        expect(page.locator("#exp-toward textarea")).not_to_have_value("")
        fill(page.locator("#exp-steer-prompt textarea"), "The model")
        fill(page.locator("#exp-max-new input"), "6")
        page.locator("#exp-steer-btn").click()
        expect(page.locator("#exp-pair")).to_contain_text(text("experiments.side.steered", lang))
        expect(page.locator("#exp-pair")).to_contain_text("steer@1")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"experiments-{lang}.png"), full_page=True)
    finally:
        context.close()


def test_the_intervene_api(experiments_app):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    url, playground = experiments_app
    client = Client(url, verbose=False)
    prompt = "The quick brown fox jumps over the lazy dog"
    ids = playground.source.codec.encode(prompt)
    scan = client.predict(experiment="head_scan", prompt=prompt, target=ids[-1], api_name="/intervene")
    assert scan["kind"] == "logprob" and len(scan["change"]) == 2 and len(scan["change"][0]) == 2
    scored = client.predict(experiment="rescore", prompt=prompt, intervention={"heads": [[0, 1]], "mode": "mean"},
                            api_name="/intervene")
    assert len(scored["positions"]) == len(ids) - 1 and scored["intervention"] == {"heads": [[0, 1]], "mode": "mean"}
    with pytest.raises(AppError, match="Experiments need the PyTorch backend"):
        client.predict(experiment="rescore", prompt=prompt, backend="onnx", api_name="/intervene")
    with pytest.raises(AppError, match="Head 0.9 does not exist"):
        client.predict(experiment="rescore", prompt=prompt, intervention={"heads": [[0, 9]]}, api_name="/intervene")
