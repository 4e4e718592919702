"""The Learn tab's chapters, in the order the Chinese GPT-2 tutorials teach them: what each shows of the learner's run,
its task, and the tab that goes further. Their words (title, text with the formula, task) are in playground/locales,
under learn.<id>.*."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chapter:
    id: str
    tab: str  # the id of the tab that shows the whole of it (app.py's gr.Tab ids)
    view: str | None  # which live view of the run it shows (learn_tab.py draws it), None: text only
    task: str | None  # the check of its try-this task (learn/checks.py); None: the learner marks it read
    controls: tuple[str, ...] = ()  # the run's parts the learner picks for the view and the task: position, layer, head


CHAPTERS = (
    Chapter("tokens", "generate", "tokens", "split_word"),
    Chapter("embeddings", "inside", "embedding", None, ("position",)),
    Chapter("attention", "attention", "attention", "previous_head", ("layer", "head")),
    Chapter("multihead", "attention", "heads", "first_head", ("layer", "head")),
    Chapter("block", "inside", "residual", None, ("position",)),
    Chapter("lens", "inside", "lens", "lens", ("position",)),
    Chapter("softmax", "generate", "surprisal", "not_top", ()),
    Chapter("decoding", "generate", "funnel", "identical", ("position",)),
    Chapter("kv_cache", "benchmark", "kv", None, ("position",)),
    Chapter("quantization", "evaluate", None, None),
    Chapter("finetune", "finetune", None, None),
    Chapter("evaluate", "evaluate", None, None),
    Chapter("serving", "generate", "code", None),
)
BY_ID = {chapter.id: chapter for chapter in CHAPTERS}
