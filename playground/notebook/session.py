"""A model opened in a notebook: the app's own Playground (model registry, backends, runs, history) on that model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import GenerationSettings
from ..errors import PlaygroundError
from ..history import HistoryStore, default_db_path
from ..models import resolve_choice, resolve_model
from ..paths import models_dir
from ..records import result_from_saved
from ..service import Playground
from .page import check_language
from .run import Run


def _history(history: bool | str | Path | HistoryStore) -> HistoryStore | None:
    if history is False or history is None:
        return None
    if isinstance(history, HistoryStore):
        return history
    return HistoryStore(default_db_path() if history is True else history)


class Model:
    """A model with the backend and variant its runs use by default; `generate` runs the app's one decoding loop."""

    def __init__(self, playground: Playground, lang: str | None = None):
        self.playground = playground
        self.lang = check_language(lang)
        self.report: dict | None = None  # the training report, for a model made by `finetune`

    @property
    def name(self) -> str:
        return self.playground.source.name

    @property
    def history(self) -> HistoryStore | None:
        return self.playground.history

    def __repr__(self) -> str:
        p = self.playground
        history = p.history.path if p.history else "off"
        return f"<Model {self.name} · {p.default_backend} {p.default_variant} · history {history}>"

    def generate(self, prompt: str, num_return_sequences: int = 1, *, backend: str | None = None, variant: str | None = None,
                 **settings: Any) -> Run:
        """Generate `num_return_sequences` samples of `prompt` (drawn as one batch) and return the run.

        `settings` are the app's (playground.config.GenerationSettings, checked with the range in the message):
        max_new_tokens, do_sample, temperature, top_k, top_p, repetition_penalty, seed, typical_p,
        no_repeat_ngram_size, stop_sequences, top_alternatives. A seed of None draws one; sample i uses seed + i.
        Each sample is saved to the history when the model was opened with one.
        """
        run = self.playground.start(prompt, GenerationSettings.from_user(**settings), backend=backend, variant=variant,
                                    num_samples=num_return_sequences)
        for _ in self.playground.stream_samples(run):  # the app's path: every record, then each sample saved
            pass
        return Run(run.results, self, self.lang)

    def finetune(self, data: str | Path, name: str, **settings: Any) -> "Model":
        """Fine-tune this model on `data` as the Fine-tune tab does, and open the result as this model is opened.

        `data`: pasted text, or a Path to a .txt, .jsonl or .csv file. `settings` are playground.finetune's
        FineTuneSettings (method "full" or "lora", learning_rate, max_steps, epochs, batch_size, block_size, ...,
        each checked with its range). The new model is saved as the folder `name` of the models folder (a name not
        taken yet); its training report (validation perplexity before and after, the loss curve) is `.report`."""
        from ..finetune.run import FineTuneSettings, run_finetune

        root = self.playground.models_root
        report = run_finetune(self.playground.source, data, FineTuneSettings.from_user(**settings), name, root)
        p = self.playground
        tuned = Model(Playground(resolve_model(str(Path(root) / name)), device=p.device, default_backend=p.default_backend,
                                 default_variant=p.default_variant, history=p.history, models_root=root), self.lang)
        tuned.report = report
        return tuned

    def evaluate(self, data: str | Path, window: int | None = None, stride: int | None = None, *,
                 backend: str | None = None, variant: str | None = None):
        """Perplexity and bits per byte of this model on `data` (pasted text, a Path to a file, or "builtin:en" /
        "builtin:zh", the demo corpora's held-out texts) by the sliding-window method, as the Evaluate tab scores it.
        Returns playground.evaluate's Evaluation (.perplexity, .bits_per_byte, .tokens, ...)."""
        from ..evaluate.run import Target, evaluate, plan_evaluation
        from ..evaluate.texts import from_pasted, read_data

        text = read_data(str(data)) if isinstance(data, Path) or data.startswith("builtin:") else from_pasted(data)
        backend = backend or self.playground.default_backend
        target = Target(None, backend, None if backend == "torch" else variant or self.playground.default_variant)
        return evaluate(plan_evaluation(self.playground, target, text, window, stride), text)

    def settings(self) -> GenerationSettings:
        """The defaults `generate` starts from."""
        return GenerationSettings()

    def open_run(self, run_id: int) -> Run:
        """A run saved in this model's history, by its id (as the History tab lists them)."""
        if self.history is None:
            raise PlaygroundError(key="notebook.no_history")
        row = self.history.get(run_id)
        if row is None:
            raise PlaygroundError(key="inside.no_run", run_id=run_id)
        codec = self.playground.source_for(row.get("model")).codec
        return Run([result_from_saved(row, codec)], self, self.lang)


def open_model(model: str = "demo", backend: str = "torch", variant: str = "fp32", device: str = "auto",
               history: bool | str | Path | HistoryStore = False, lang: str | None = None) -> Model:
    """Open a model as the app does (`--model`): "demo" and "demo-zh" (the offline demo GPT-2s, built on first use),
    a folder in Hugging Face format, or a hub id such as "gpt2" (from the local cache when it is there).

    `backend` "torch" or "onnx" (exported on first use), `variant` fp32, fp16, int8 or int4 (ONNX); `device`
    "auto", "cpu" or "cuda". `history`: False keeps runs in memory only, True saves them to the app's history file
    (`$GPT2_PLAYGROUND_DB` or the per-user folder, what the app's History tab shows), a path to that file.
    `lang` "en" or "zh-CN" for the views' words (default: the notebook's locale)."""
    source = resolve_model(model)
    playground = Playground(source, device=device, default_backend=backend, default_variant=variant,
                            history=_history(history))
    return Model(playground, lang)


def open_run(run_id: int, db: str | Path | None = None, device: str = "auto", lang: str | None = None) -> Run:
    """A run from the app's history file (`db`, default the app's) by its id, with the model it was made with when
    that model is still here (a folder of the models folder, or a hub id in the cache): then attention() and
    inside() work as on a new run; without it the token view still shows."""
    store = HistoryStore(db or default_db_path())
    row = store.get(run_id)
    if row is None:
        raise PlaygroundError(key="inside.no_run", run_id=run_id)
    try:
        source = resolve_choice(row.get("model"), models_dir())
    except PlaygroundError as exc:  # kept and raised by attention() and inside(): the token view needs no model
        gone = PlaygroundError(key="notebook.model_gone", run_id=run_id, model=row.get("model"), error=str(exc))
        return Run([result_from_saved(row)], None, lang, model_error=gone)
    playground = Playground(source, device=device, default_backend=row.get("backend") or "torch", history=store)
    return Model(playground, lang).open_run(run_id)
