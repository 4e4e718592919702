"""The notebooks of docs/notebooks executed in a real Jupyter kernel on the demo models (the tiny ones here), exported to
HTML and opened in headless Chromium with every request aborted: every view draws, and nothing was asked of a network."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from .conftest import ARTIFACTS

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "docs" / "notebooks"


@pytest.fixture(scope="module")
def demo_models(tiny_model_dir, tiny_zh_demo_dir, tmp_path_factory) -> Path:
    """A models folder whose demo-gpt2 and demo-zh-gpt2 are the tiny models, so `open_model("demo")` opens one in seconds."""
    root = tmp_path_factory.mktemp("notebook-models")
    shutil.copytree(tiny_model_dir, root / "demo-gpt2")
    shutil.copytree(tiny_zh_demo_dir, root / "demo-zh-gpt2")
    return root


def execute(name: str, models: Path, cwd: Path, monkeypatch):
    """Run every cell of a notebook in a fresh python3 kernel (a subprocess that inherits this environment), in `cwd`."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("GPT2_PLAYGROUND_MODELS", str(models))
    monkeypatch.setenv("GPT2_PLAYGROUND_DB", str(cwd / "history.db"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    # Last, in the same kernel: nothing the notebook did imported Gradio (the views are the app's HTML without the app).
    notebook.cells.append(nbformat.v4.new_code_cell("import sys\nassert 'gradio' not in sys.modules, 'gradio was imported'"))
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return notebook


@pytest.mark.parametrize("name, lang", [("playground.ipynb", "en"), ("playground.zh.ipynb", "zh-CN")])
def test_a_notebook_runs_and_its_exported_page_draws_every_view_offline(name, lang, demo_models, tmp_path, monkeypatch,
                                                                        browser):
    from playwright.sync_api import expect

    from playground.notebook import export_html

    notebook = execute(name, demo_models, tmp_path, monkeypatch)
    streams = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "stream"]
    assert not [o.text for o in streams if o.name == "stderr"]  # no warning above a cell's output
    assert (tmp_path / "run.html").is_file() and (tmp_path / "attention.html").is_file()  # what save_html wrote
    tuned = [o.text for cell in notebook.cells if "finetune(" in cell.source for o in cell.outputs if o.output_type == "stream"]
    before, after = map(float, re.search(r"([\d.]+)\D+([\d.]+)", tuned[0].splitlines()[0]).groups())
    assert after < before, tuned[0]  # the fine-tuned model knows the story better

    requested: list[str] = []
    context = browser.new_context(viewport={"width": 1200, "height": 900})

    def refuse(route):
        requested.append(route.request.url)
        route.abort()

    context.route("**/*", refuse)
    page = context.new_page()
    try:
        page.set_content(export_html(notebook), wait_until="load")
        views = page.locator(".gpt2pg")
        kinds = [views.nth(i).get_attribute("data-view") for i in range(views.count())]
        assert kinds == ["run", "tokens", "attention", "inside", "prediction", "run", "run"]  # the last two: fine-tuned, history
        for i in range(views.count()):
            expect(views.nth(i)).to_have_attribute("lang", lang)
        runs = page.locator(".gpt2pg-run")
        expect(runs.first.locator(".samples .sample")).to_have_count(3)  # num_return_sequences=3
        assert runs.first.locator(".tokview .tok, .tokview .unit").count() > 10
        # A token's card shows on hover: the hover cards are CSS, no script needed.
        token = runs.first.locator(".samples .tokview .tok").first
        token.hover()
        expect(token.locator(".tip")).to_be_visible()
        expect(page.locator(".gpt2pg-tokens .legend")).to_contain_text("GLTR")

        attention = page.locator(".gpt2pg-attention")
        expect(attention).to_have_attribute("data-drawn", "true")  # set by the inlined script once it drew
        layers, heads = 2, 2  # the tiny models (tests/conftest.py)
        expect(attention.locator("canvas.thumb")).to_have_count(layers * (heads + 1))
        expect(attention.locator(".noscript")).to_have_count(0)
        blue = attention.locator("canvas.big").evaluate(
            "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;"
            " for (let i = 0; i < d.length; i += 4) if (d[i + 2] > d[i] + 40) n++; return n; }")
        assert blue > 100  # the enlarged heatmap has blue cells
        attention.locator("canvas.thumb").nth(2).click()
        expect(attention.locator("canvas.thumb.picked")).to_have_count(1)

        inside = page.locator(".gpt2pg-inside")
        cells = inside.locator("table.lens-grid td.cell")
        columns = inside.locator("table.lens-grid thead th").count() - 1
        assert columns > 5 and cells.count() == (layers + 1) * columns
        for view in (inside, page.locator(".gpt2pg-prediction")):
            expect(view.locator("table.inside-table")).to_have_count(2)  # logit lens, funnel
            expect(view.locator("table.residual tbody tr")).to_have_count(layers + 1)
            assert view.locator(".funnel-stage").count() >= 2
        if lang == "zh-CN":
            expect(attention).to_contain_text("第 0 层")
            expect(inside).to_contain_text("词嵌入")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"notebook-{lang}.png"), full_page=True)
    finally:
        context.close()
    assert requested == []
