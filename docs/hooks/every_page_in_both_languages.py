"""MkDocs hook: a page without its translation is a warning, so `mkdocs build --strict` fails on it.

mkdocs-static-i18n falls back to the English page when docs/<page>.zh.md is missing (the fallback also serves
the English PNGs to the Chinese pages, which is why it stays on), and says so only in its debug log.
"""

from pathlib import Path

from mkdocs.plugins import get_plugin_logger

log = get_plugin_logger("every_page_in_both_languages")


def on_pre_build(config):
    docs = Path(config.docs_dir)
    pages = {p.relative_to(docs).as_posix() for p in docs.rglob("*.md")}
    for page in sorted(pages):
        twin = page.removesuffix(".zh.md") + ".md" if page.endswith(".zh.md") else page.removesuffix(".md") + ".zh.md"
        if twin not in pages:
            log.warning(f"docs/{page} has no docs/{twin}: every page is written in English and in Simplified Chinese")
