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
# What a view draws of a large tree (16 beams make 32 continuations a step: 8,192 for 256 tokens, each with its card):
# whole steps, at most TREE_STEPS of them and TREE_NODES continuations (at least one step). The SVG export draws the
# whole tree; a PNG at most PNG_NODES continuations (a bitmap of a whole long tree would be hundreds of megabytes).
TREE_STEPS = 24
TREE_NODES = 480
PNG_NODES = 1200


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


def window(tree: dict, start: int = 0, nodes: int = TREE_NODES, steps: int = TREE_STEPS) -> tuple[list[list[dict]], range, int]:
    """The part of `tree` a view draws: its columns (see `columns`) of whole steps from `start` on, at most `steps` of them
    and `nodes` continuations in all (always at least one step). Returns (those columns, their steps, the tree's steps)."""
    every = columns(tree)
    start = max(0, min(start, len(every) - 1))
    end, count = start, 0
    while end < len(every) and end - start < steps and (end == start or count + len(every[end]) <= nodes):
        count += len(every[end])
        end += 1
    return every[start:end], range(start, end), len(every)


def returned_rest(tree: dict, after: int) -> list[tuple[dict, list[dict]]]:
    """Each returned sequence's nodes after step `after` (its last node first in the pair): what a cut view lists."""
    by_id = {node["id"]: node for node in tree["nodes"]}
    out = []
    for node_id in tree["returned"]:
        path, node = [], by_id.get(node_id)
        end = node
        while node is not None and node["step"] > after:
            path.append(node)
            node = by_id.get(node["parent"])
        if end is not None:
            out.append((end, path[::-1]))
    return out


def total_steps(tree: dict) -> int:
    return 1 + max((node["step"] for node in tree["nodes"]), default=0)


def node_label(node: dict) -> str:
    return visible_label(node.get("text", str(node["token_id"])))


def static_tree(tree: dict, path: Path, lang: str = "en") -> Path:
    """The tree as a file for papers: PNG or SVG by the suffix of `path`. Steps run left to right, each step's
    continuations top to bottom (best first); an edge joins each to the beam it continues; pruned ones are grey,
    finished ones bold, and the returned sequences' paths green. An SVG draws the whole tree; a PNG the first steps
    that hold PNG_NODES continuations, and says so under its title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"  # labels stay editable text
    whole = Path(path).suffix.lower() == ".svg"
    steps, drawn, total = window(tree, 0, len(tree["nodes"]) if whole else PNG_NODES, total_steps(tree))
    title = t("beams.figure_title", lang, beams=tree["num_beams"], penalty=tree["length_penalty"])
    if len(drawn) < total:
        title += "\n" + t("beams.figure_cut", lang, last=drawn[-1] + 1, total=total)
    shown = [node for nodes in steps for node in nodes]
    cjk_font_notice([node_label(node) for node in shown] + [title, t("beams.figure_x", lang)])  # a CJK font where needed
    where = {node["id"]: (s, -j) for s, nodes in enumerate(steps) for j, node in enumerate(nodes)}
    on_path = returned_ids(tree)
    depth = max((len(nodes) for nodes in steps), default=1)
    width = 2 + 1.6 * len(steps)  # an SVG as wide as its steps need: it is zoomed, not printed
    fig, ax = plt.subplots(figsize=(width if whole else min(40, width), min(40, 1.5 + 0.45 * depth)), dpi=130)
    for node in shown:
        x, y = where[node["id"]]
        if node["parent"] in where:
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
