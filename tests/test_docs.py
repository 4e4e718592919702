"""The docs: README.md a short front page whose test command is CI's, and the MkDocs site built strictly in both languages."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
READMES = {"en": ROOT / "README.md", "zh": ROOT / "README.zh-CN.md"}
README_MAX_LINES = 250  # issue 26: a front page; the long sections live in docs/


def test_each_readme_is_a_front_page():
    for language, readme in READMES.items():
        lines = readme.read_text(encoding="utf-8").count("\n")
        assert lines <= README_MAX_LINES, (
            f"{readme.name} has {lines} lines; at most {README_MAX_LINES}: move the long part into a page of docs/"
        )


def _test_command(text: str) -> str:
    """The README's full test command: the one line of a fence that installs the system packages and runs pytest."""
    commands = [line for line in text.splitlines() if line.startswith("apt-get update") and "pytest" in line]
    assert len(commands) == 1, f"expected one test command line starting with 'apt-get update', found {commands}"
    return commands[0]


def test_the_readmes_test_command_is_the_one_ci_runs():
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    for readme in READMES.values():
        command = _test_command(readme.read_text(encoding="utf-8"))
        assert command in ci_lines, f"{readme.name}'s test command is not a line of .ci/run; keep the two identical"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built by `mkdocs build --strict`, which fails on a broken link or anchor and on a page missing in one language."""
    for package in ("mkdocs", "material", "mkdocs_static_i18n"):
        pytest.importorskip(package, reason='the docs packages: pip install -e ".[docs]"')
    out = tmp_path_factory.mktemp("site")
    environment = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's banner about its successor
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, f"mkdocs build --strict failed:\n{built.stdout}\n{built.stderr}"
    return out


def test_the_site_builds_strictly_in_both_languages(site):
    for page in ("index.html", "onnx/index.html", "zh/index.html", "zh/onnx/index.html"):
        assert (site / page).is_file(), f"{page} missing from the built site"
    assert 'lang="zh"' in (site / "zh" / "onnx" / "index.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("language", ["en", "zh"])
def test_the_readmes_links_into_the_docs_resolve(site, language):
    """mkdocs checks the pages' own links; the READMEs' links into docs/ (pages and anchors) are checked here."""
    readme = READMES[language]
    links = re.findall(r"\]\((docs/[^)\s]+)\)", readme.read_text(encoding="utf-8"))
    assert links, f"{readme.name} links nowhere into docs/"
    for link in links:
        path, _, anchor = link.partition("#")
        assert (ROOT / path).is_file(), f"{readme.name} links to {path}, which does not exist"
        if not path.endswith(".md") or not anchor:
            continue
        page = Path(path).relative_to("docs").with_suffix("").as_posix().removesuffix(".zh")
        html = site / ("zh" if language == "zh" else "") / ("" if page == "index" else page) / "index.html"
        assert f'id="{anchor}"' in html.read_text(encoding="utf-8"), f"{readme.name} links to {link}: no such anchor"
