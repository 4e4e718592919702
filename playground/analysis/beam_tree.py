"""The beam tree of a beam search run (decoding/beam.py's `BeamSearch.tree`): where each node goes in a drawing, and
the drawing as a PNG or SVG file (matplotlib, as the other exported figures)."""

from __future__ import annotations

from pathlib import Path

from ..figures import cjk_font_notice
from ..locales import text as t
from ..text import visible_label

# Colours of a node's status, in the HTML view and the figure alike.
STATUS_COLOURS = {"running": "#dbeafe", "finished": "#dcfce7", "pruned": "#f3f4f6"}
RETURNED_EDGE = "#16a34a"


def returned_ids(tree: dict) -> set[int]:
    """Every node on a returned sequence's path (the returned ids are the paths' last nodes)."""
    parents = {node["id"]: node["parent"] for node in tree["nodes"]}
    on_path = set()
    for node_id in tree["returned"]:
        while node_id is not None and node_id not in on_path:
            on_path.add(node_id)
            node_id = parents[node_id]
    return on_path


def columns(tree: dict) -> list[list[dict]]:
    """The nodes by step, each step's best first (by cumulative log-probability: beam sampling draws them in any order)."""
    steps: list[list[dict]] = []
    for node in tree["nodes"]:
        while len(steps) <= node["step"]:
            steps.append([])
        steps[node["step"]].append(node)
    return [sorted(nodes, key=lambda node: -node["cumulative"]) for nodes in steps]


def node_label(node: dict) -> str:
    return visible_label(node.get("text", str(node["token_id"])))


def static_tree(tree: dict, path: Path, lang: str = "en") -> Path:
    """The tree as a file for papers: PNG or SVG by the suffix of `path`. Steps run left to right, each step's
    continuations top to bottom (best first); an edge joins each to the beam it continues; pruned ones are grey,
    finished ones bold, and the returned sequences' paths green."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"  # labels stay editable text
    steps = columns(tree)
    title = t("beams.figure_title", lang, beams=tree["num_beams"], penalty=tree["length_penalty"])
    cjk_font_notice([node_label(node) for node in tree["nodes"]] + [title, t("beams.figure_x", lang)])  # a CJK font where needed
    where = {node["id"]: (s, -j) for s, nodes in enumerate(steps) for j, node in enumerate(nodes)}
    on_path = returned_ids(tree)
    depth = max((len(nodes) for nodes in steps), default=1)
    fig, ax = plt.subplots(figsize=(min(40, 2 + 1.6 * len(steps)), min(40, 1.5 + 0.45 * depth)), dpi=130)
    for node in tree["nodes"]:
        x, y = where[node["id"]]
        if node["parent"] is not None:
            px, py = where[node["parent"]]
            returned = node["id"] in on_path
            ax.plot([px + 0.14, x - 0.14], [py, y], color=RETURNED_EDGE if returned else "#9ca3af",
                    linewidth=2.2 if returned else 0.6, zorder=1)
        pruned = node["status"] == "pruned"
        ax.text(x, y, f"{node_label(node)}\n{node['score']:.2f}", ha="center", va="center", fontsize=7,
                color="#9ca3af" if pruned else "#111827", fontweight="bold" if node["status"] == "finished" else "normal",
                bbox={"boxstyle": "round,pad=0.25", "facecolor": STATUS_COLOURS[node["status"]],
                      "edgecolor": RETURNED_EDGE if node["id"] in on_path else "#d1d5db"}, zorder=2)
    ax.set_xlim(-0.6, max(len(steps), 1) - 0.4)
    ax.set_ylim(-depth + 0.4, 0.6)
    ax.set_xticks(range(len(steps)), [str(s + 1) for s in range(len(steps))])
    ax.set_yticks([])
    ax.set_xlabel(t("beams.figure_x", lang))
    ax.set_title(title)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
