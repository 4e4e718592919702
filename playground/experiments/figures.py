"""The experiments' grids drawn as heatmaps (plotly, as the other tabs draw): layers down, heads or positions across."""

from __future__ import annotations

from html import escape

import numpy as np


def grid_figure(values, rows: list[str], columns: list[str], title: str, x_title: str, y_title: str, scale: str,
                symmetric: bool = True):
    """`values` (rows, columns) as a heatmap, the first row at the top, each cell's number written in it when the grid
    is small; `symmetric`: a diverging scale centred on 0 (blue down, red up). Labels are escaped (prompts are users')."""
    import plotly.graph_objects as go

    z = np.asarray(values, dtype=float)
    finite = z[np.isfinite(z)]
    most = float(np.abs(finite).max()) if finite.size else 1.0
    most = most or 1.0
    shown_text = z.size <= 400
    figure = go.Figure(go.Heatmap(
        z=z, x=[escape(c, quote=False) for c in columns], y=[escape(r, quote=False) for r in rows],
        colorscale="RdBu_r" if symmetric else "Blues", zmid=0 if symmetric else None,
        zmin=-most if symmetric else None, zmax=most if symmetric else None,
        text=np.vectorize(lambda v: "" if not np.isfinite(v) else f"{v:.2f}")(z) if shown_text else None,
        texttemplate="%{text}" if shown_text else None, textfont={"size": 10},
        colorbar={"title": {"text": escape(scale, quote=False)}},
        hovertemplate=f"{escape(y_title)} %{{y}} · {escape(x_title)} %{{x}}: %{{z:.4f}}<extra></extra>"))
    figure.update_layout(title=escape(title, quote=False), height=min(720, 160 + 32 * len(rows)),
                         margin={"l": 60, "r": 20, "t": 50, "b": 60}, xaxis_title=escape(x_title), yaxis_title=escape(y_title),
                         yaxis={"autorange": "reversed", "type": "category"}, xaxis={"type": "category"})
    return figure
