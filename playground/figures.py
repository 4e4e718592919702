"""Fonts for matplotlib figures: a CJK font when one is installed, so Han characters are not drawn as boxes."""

from __future__ import annotations

import unicodedata
from functools import lru_cache

# Families that cover Simplified Chinese, most preferred first (Debian: fonts-noto-cjk, fonts-wqy-*, fonts-arphic-*).
CJK_FAMILIES = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Serif CJK SC", "Source Han Sans SC", "WenQuanYi Zen Hei",
                "WenQuanYi Micro Hei", "Droid Sans Fallback", "AR PL UMing CN", "AR PL UKai CN")
NO_CJK_FONT = ("No CJK font is installed, so Chinese, Japanese and Korean characters in this image are drawn as boxes. "
               "Install one (Debian/Ubuntu: apt-get install fonts-noto-cjk) and download it again.")


@lru_cache(maxsize=1)
def cjk_family() -> str | None:
    """The first installed CJK font family, registered as matplotlib's fallback after DejaVu Sans; None if there is none."""
    import matplotlib
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    family = next((name for name in CJK_FAMILIES if name in installed), None)
    if family is not None:
        # matplotlib falls back glyph by glyph through this list (3.6+): Latin from DejaVu, Han from the CJK font.
        # (The fallback walks font.family; the "sans-serif" alias would resolve to one font only.)
        matplotlib.rcParams["font.family"] = ["DejaVu Sans", family]
    return family


def needs_cjk(texts: list[str]) -> bool:
    return any(unicodedata.east_asian_width(c) in ("W", "F") for text in texts for c in text)


def cjk_font_notice(texts: list[str]) -> str | None:
    """Set up a CJK font for figures about to be drawn with `texts`; a notice when they need one and none exists."""
    if not needs_cjk(texts):
        return None
    return None if cjk_family() is not None else NO_CJK_FONT
