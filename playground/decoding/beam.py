"""Beam search as transformers' `generate(num_beams=...)` does it (its `_beam_search`, 4.5x), one step at a time:
the run's B rows in the batch are the running beams, and after each step the batch reorders them by their parents.

Each step (`BeamSearch.step`) takes the B rows' processed log-probabilities, adds each row's cumulative score, and
keeps the best K = max(2, 1 + number of end tokens) * B continuations over all B x V (or samples K of them, for beam
sampling). A continuation that ends (an end token, or max_new_tokens reached) and is among the first B becomes a
finished hypothesis with the length-normalised score cumulative / length ** length_penalty (the best B are kept); the
best B that do not end run on. The search ends when the finished hypotheses cannot be beaten any more (transformers'
early-stop heuristic, `early_stopping` False/True/"never"), or when every continuation ends. Every continuation is a
`Node` of the beam tree, which keeps its record: a returned sequence is the path of records to its node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

RUNNING, FINISHED, PRUNED = "running", "finished", "pruned"
TREE_ALTERNATIVES = 5  # alternatives each node of a saved tree keeps for its card (a tree has 2B nodes per step)
SORT_WHOLE = 4096  # continuations few enough to sort whole (each row's best c, not its whole vocabulary)
MASKED = -1.0e9  # transformers' score of a beam that must not be chosen (the B - 1 copies of the prompt at the start)


@dataclass(eq=False)
class Node:
    """One continuation considered at a step: its token after its parent's path, and where it went."""

    step: int  # 0 for the first generated token
    parent: "Node | None"  # None: it continues the prompt
    row: int  # the beam row (of the step's B) it continues
    token_id: int
    logprob: float  # the token's log-probability in its row's processed distribution
    cumulative: float  # the path's summed log-probability up to and including this token
    score: float  # cumulative / (step + 1) ** length_penalty
    status: str = PRUNED  # running (a beam of the next step), finished (a kept hypothesis) or pruned
    record: Any = None  # the TokenRecord of this token (records.TokenRecord), made by the run
    id: int = -1  # its place in the tree (`BeamSearch.nodes`)

    def path(self) -> list["Node"]:
        """The nodes from the first generated token to this one."""
        nodes, node = [], self
        while node is not None:
            nodes.append(node)
            node = node.parent
        return nodes[::-1]


class BeamSearch:
    """The state of one run's beam search: running scores, the beams' paths, the finished hypotheses, the tree."""

    def __init__(self, num_beams: int, length_penalty: float, early_stopping: bool | str, eos_ids, max_new_tokens: int,
                 do_sample: bool = False, generator: torch.Generator | None = None):
        self.num_beams, self.length_penalty, self.early_stopping = num_beams, length_penalty, early_stopping
        self.eos_ids, self.max_new_tokens = frozenset(eos_ids), max_new_tokens
        self.do_sample, self.generator = do_sample, generator
        self.keep = max(2, 1 + len(self.eos_ids)) * num_beams  # continuations looked at per step (transformers' beams_to_keep)
        # Only the first row counts at the start: the B rows are all the prompt, and B copies of its best token would tie.
        self.scores = np.full(num_beams, MASKED, dtype=np.float32)  # (B,) cumulative log-prob of each running beam
        self.scores[0] = 0.0
        self.paths: list[Node | None] = [None] * num_beams  # each running beam's last node
        # The rows in transformers' order of the running beams (best first): its row r is our row order[r]. The batch
        # keeps a beam in its parent's row instead (fewer cache copies), so a step reads the rows in this order: ties
        # break, and beam sampling draws, as transformers' do on its order of the same numbers.
        self.order: list[int] | None = None  # None: the rows' own order
        self.finished: list[Node] = []  # the best finished hypotheses, best first, at most B
        self.improvable = True  # transformers' is_early_stop_heuristic_unsatisfied (sticky: once False, the search ends)
        self.length = 0  # tokens generated per beam so far
        self.done = False
        self.nodes: list[Node] = []  # the tree: every step's K continuations, in step order

    def step(self, log_probs: np.ndarray, ids: np.ndarray | None = None) -> tuple[list[Node], list[int], list[int]]:
        """One step from the B rows' processed log-probabilities: `log_probs` (B, V) float32, or (B, c) for each row's c
        most likely tokens `ids` (B, c) when c >= K (the best K continuations over all rows are among them). Returns (the
        step's K continuations, for the run to give records; the parent row of each next beam; each next beam's token).
        Sets `done` when the search is over (the next beams are then not used). float32 throughout, as transformers."""
        beams, width = log_probs.shape
        order, scores = self.order, self.scores
        if order is not None:  # transformers' order of the rows
            log_probs, scores = log_probs[order], scores[order]
            ids = None if ids is None else ids[order]
        total = (log_probs + scores[:, None]).reshape(-1)  # (B * c,) cumulative log-prob of every continuation
        if self.do_sample:  # beam sampling: K continuations drawn without replacement, by their cumulative probability
            weights = torch.softmax(torch.from_numpy(total), dim=-1)
            index = torch.multinomial(weights, self.keep, generator=self.generator).numpy()  # (K,)
        elif total.shape[0] <= SORT_WHOLE:  # a few continuations (each row's best c): one stable sort of them all
            index = np.argsort(-total, kind="stable")[: self.keep]  # (K,) best first, lower index first on a tie (as topk)
        else:
            index = np.argpartition(-total, self.keep - 1)[: self.keep]  # the best K, unordered
            index = index[np.lexsort((index, -total[index]))]  # (K,) best first, lower index first on a tie (as topk)
        values = total[index]  # (K,) float32
        picked = log_probs.reshape(-1)[index].tolist()  # (K,) each continuation's own log-prob
        rows = (index // width).tolist() if order is None else [order[r] for r in (index // width).tolist()]
        tokens = (index % width if ids is None else ids.reshape(-1)[index]).tolist()
        length = self.length + 1  # tokens of each continuation's path
        if length >= self.max_new_tokens:
            ends = [True] * len(tokens)
        else:
            ends = [t in self.eos_ids for t in tokens]  # (K,)
        # The next beams: the best B continuations that do not end (an ending one is out of the running).
        running = values.copy()  # (K,) float32
        if any(ends):
            running[np.array(ends)] += np.float32(MASKED)  # as transformers adds, in float32
        ranked = following = np.argsort(-running, kind="stable")[:beams].tolist()  # (B,) best first (topk's order)
        # The next beams in any order of rows: each parent's first continuation stays in its parent's row, so that the
        # batch copies only the rows of parents that go on twice (into the rows of parents that were dropped).
        slots: list[int | None] = [None] * beams
        extra = []
        for j in following:
            if slots[rows[j]] is None:
                slots[rows[j]] = j
            else:
                extra.append(j)
        if extra:
            extra.reverse()
            following = [j if j is not None else extra.pop() for j in slots]
        else:
            following = slots
        slot = {j: i for i, j in enumerate(following)}
        self.order = [slot[j] for j in ranked]
        if self.order == list(range(beams)):
            self.order = None
        normalised = values / np.float32(length ** self.length_penalty)  # (K,) as transformers divides, in float32
        first, paths = len(self.nodes), self.paths
        steps = [Node(self.length, paths[r], r, t, p, v, s, id=first + j)
                 for j, (r, t, p, v, s) in enumerate(zip(rows, tokens, picked, values.tolist(), normalised.tolist()))]
        self.nodes += steps
        # Hypotheses: the continuations among the first B that end, unless the search can take no more (every slot is
        # finished and early_stopping is True, or the heuristic found that nothing can improve any more).
        full = len(self.finished) == beams
        if self.improvable and not (full and self.early_stopping is True):
            ended = [steps[j] for j in range(beams) if ends[j]]
            if ended:
                for node in ended:
                    node.status = FINISHED
                self.finished += ended
                self.finished.sort(key=lambda node: -node.score)  # stable: earlier hypotheses first on a tie
                for node in self.finished[beams:]:
                    node.status = PRUNED
                del self.finished[beams:]
        for j in following:
            if not ends[j]:
                steps[j].status = RUNNING
        self.scores = running[following]  # (B,) float32
        self.paths = [steps[j] for j in following]
        self.length = length
        self._check_done(all(ends))
        return steps, [rows[j] for j in following], [tokens[j] for j in following]

    def _check_done(self, all_ended: bool) -> None:
        """transformers' stopping rule: nothing can beat the finished hypotheses (early-stop heuristic), every slot is
        finished with early_stopping True, or every continuation ended (max_new_tokens)."""
        full = len(self.finished) == self.num_beams
        if full and self.improvable:
            if self.early_stopping == "never" and self.length_penalty > 0.0:
                best_length = self.max_new_tokens  # a longer path can only score higher
            else:
                best_length = self.length
            best_possible = self.scores.max() / np.float32(best_length ** self.length_penalty)  # the best running beam, float32
            worst = np.float32(min(node.score for node in self.finished))
            self.improvable = bool(best_possible > worst)
        self.done = not self.improvable or (full and self.early_stopping is True) or all_ended

    def returned(self, count: int) -> list[Node]:
        """The best `count` hypotheses, best first. A search stopped before it ended counts its running beams too,
        scored at their length (as the old BeamSearchScorer's finalize did)."""
        candidates = list(self.finished)
        if not self.done and self.length:
            scores = self.scores.tolist()
            for row in self.order or range(self.num_beams):  # transformers' order: first on a tie
                if scores[row] > MASKED / 2:
                    candidates.append(self.paths[row])
            candidates.sort(key=lambda node: -node.score)
        return candidates[:count]

    def tree(self, returned: list[Node]) -> dict:
        """The beam tree as JSON: every step's continuations (id, parent id, step, row, token, log-prob, cumulative and
        normalised score, status, its record's text and card numbers) and the ids of the returned sequences' last nodes."""
        nodes = []
        for node in self.nodes:
            record = node.record
            item = {"id": node.id, "parent": node.parent.id if node.parent else None, "step": node.step, "row": node.row,
                    "token_id": node.token_id, "logprob": node.logprob, "cumulative": node.cumulative, "score": node.score,
                    "status": node.status}
            if record is not None:
                item |= {"position": record.position, "text": record.text, "bytes": list(record.bytes), "prob": record.prob,
                         "raw_prob": record.raw_prob, "rank": record.rank, "entropy_bits": record.entropy_bits,
                         "top": [{"token_id": a.token_id, "text": a.text, "prob": a.prob, "bytes": list(a.bytes)}
                                 for a in record.top[:TREE_ALTERNATIVES]]}
            nodes.append(item)
        return {"num_beams": self.num_beams, "length_penalty": self.length_penalty, "early_stopping": self.early_stopping,
                "nodes": nodes, "returned": [node.id for node in returned]}
