"""An executed notebook as one HTML page that opens with no network: nbconvert's lab page, less what it loads from CDNs."""

from __future__ import annotations

from pathlib import Path

from ..errors import PlaygroundError

TEMPLATES = Path(__file__).resolve().parent / "templates"


def export_html(notebook: str | Path | object, path: str | Path | None = None) -> str:
    """The notebook (a path to an .ipynb, or an nbformat node) as HTML with its outputs, written to `path` when given.

    nbconvert's own lab template loads require.js and MathJax from cdnjs; this one (templates/offline) does not, so
    the page draws offline, behind a firewall, and from mainland China alike. Markdown maths stays as its TeX source."""
    try:
        import nbformat
        from nbconvert import HTMLExporter
    except ImportError:
        raise PlaygroundError(key="notebook.no_nbconvert") from None
    node = nbformat.read(str(notebook), as_version=4) if isinstance(notebook, (str, Path)) else notebook
    exporter = HTMLExporter(template_name="offline", extra_template_basedirs=[str(TEMPLATES)])
    html, _ = exporter.from_notebook_node(node)
    if path is not None:
        Path(path).write_text(html, encoding="utf-8")
    return html
