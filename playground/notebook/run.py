"""A run in a notebook: the app's GenerationResult of each sample, as a table, and its views (tokens, attention,
Inside)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..errors import PlaygroundError
from ..records import GenerationResult
from .page import View, check_language
from .views import AttentionView, LensGridView, PredictionView, TokensView

if TYPE_CHECKING:
    import pandas

    from .session import Model

ATTENTION_WINDOW = 96  # tokens the notebook's attention view takes by default: 12 x 12 x 96 x 96 bytes = 1.3 MB of page


class Run(View):
    """What `Model.generate` returns (and `open_run` opens): every sample of one prompt, with its token records.

    Shown inline as the token view; `to_dataframe()` gives one row per token; `attention()` and `inside()` look
    into the model's forward pass over a sample, on the backend that made it.
    """

    kind = "run"

    def __init__(self, results: list[GenerationResult], model: "Model | None", lang: str | None = None,
                 model_error: PlaygroundError | None = None):
        self.results = results
        self.model = model
        self.lang = check_language(lang)
        self._model_error = model_error  # why a run opened from the history has no model to look into

    def __len__(self) -> int:
        return len(self.results)

    def __repr__(self) -> str:
        return f"<Run of {len(self.results)} sample(s) on {self.results[0].info.label()}: {self.results[0].text[:60]!r}>"

    @property
    def result(self) -> GenerationResult:
        """The first sample (the only one of a run of one)."""
        return self.results[0]

    @property
    def text(self) -> str:
        """The first sample's generated text."""
        return self.results[0].text

    @property
    def texts(self) -> list[str]:
        """Every sample's generated text."""
        return [r.text for r in self.results]

    @property
    def run_ids(self) -> list[int | None]:
        """Each sample's id in the history (None when the model was opened without one)."""
        return [r.run_id for r in self.results]

    def tokens(self, mode: str = "prob", lang: str | None = None) -> TokensView:
        """The token view: `mode="prob"` colours by the model's probability, `"rank"` by GLTR's rank buckets."""
        return TokensView(self.results, check_language(lang or self.lang), mode)

    def body_html(self) -> str:
        return self.tokens().body_html()

    def records(self, sample: int = 0) -> list:
        """The sample's TokenRecords: the prompt's, then the generated ones."""
        result = self._sample(sample)
        return result.prompt_tokens + result.tokens

    def to_dataframe(self) -> "pandas.DataFrame":
        """One row per token of every sample: where it is, what it is, and what the model thought of it.

        `raw_prob` is the model's own softmax; `prob` the distribution that was sampled from (after the penalties,
        temperature, top-k and top-p); `surprisal_bits` is -log2 raw_prob; `top` the alternatives as (text, prob)."""
        import pandas

        rows = []
        for sample, result in enumerate(self.results):
            for record in result.prompt_tokens + result.tokens:
                rows.append({
                    "sample": sample, "run_id": result.run_id, "position": record.position, "is_prompt": record.is_prompt,
                    "token_id": record.token_id, "text": record.text, "raw_prob": record.raw_prob, "prob": record.prob,
                    "rank": record.rank, "entropy_bits": record.entropy_bits,
                    "surprisal_bits": -math.log2(record.raw_prob) if record.raw_prob else None,
                    "top": [(a.text, a.prob) for a in record.top],
                })
        frame = pandas.DataFrame(rows)
        for column in ("run_id", "rank"):  # whole numbers with gaps (an unsaved run, the first prompt token): not floats
            frame[column] = frame[column].astype("Int64")
        return frame

    def attention(self, sample: int = 0, layer: int = 0, head: int | None = None,
                  window: int = ATTENTION_WINDOW) -> AttentionView:
        """Attention over the sample's tokens (its last `window`), every layer and head, from the backend that made it.
        The view opens on `layer` and `head` (None: the mean over heads); `.weights` is the (layers, heads, T, T) array."""
        from ..analysis.attention import compute_attention

        result, model = self._sample(sample), self._model()
        info = result.info
        backend = model.playground.analysis_backend(info.backend, info.variant, info.model)
        ids = [r.token_id for r in result.prompt_tokens + result.tokens]
        attention = compute_attention(backend, ids, model.playground.source_for(info.model).codec, cap=window)
        return AttentionView(attention, self.lang, layer, head)

    def inside(self, sample: int = 0) -> "InsideView":
        """The sample opened as the Inside tab opens it: the residual stream of every layer, computed once."""
        result, model = self._sample(sample), self._model()
        return InsideView(model.playground.inside(result), self.lang)

    def _sample(self, sample: int) -> GenerationResult:
        if not isinstance(sample, int) or not 0 <= sample < len(self.results):
            raise PlaygroundError(key="notebook.sample_range", sample=sample, last=len(self.results) - 1)
        return self.results[sample]

    def _model(self) -> "Model":
        if self.model is None:
            raise self._model_error or PlaygroundError(key="notebook.no_model")
        return self.model


class InsideView(View):
    """A sample opened for analysis (the app's analysis.inside.Inside). Shown inline as the logit lens over the whole
    run and the first generated token's prediction; `at(position)` looks at another."""

    kind = "inside"

    def __init__(self, inside: Any, lang: str):
        self.inside, self.lang = inside, lang

    @property
    def default_position(self) -> int:
        """The first generated token (the last token of a run that generated none)."""
        result = self.inside.result
        return len(result.prompt_tokens) if result.tokens else len(result.prompt_tokens) - 1

    def report(self, position: int | None = None, layer: int = 0, head: int = 0, temperature: float | None = None,
               top_k: int | None = None, top_p: float | None = None) -> dict:
        """Everything the Inside tab shows for the prediction of the token at `position`, as a dict (the API's JSON):
        embedding, residual, logit_lens, funnel (with other temperature / top_k / top_p if given), block, kv_cache."""
        position = self.default_position if position is None else position
        return self.inside.report(position, layer, head, temperature, top_k, top_p)

    def at(self, position: int | None = None, **settings: Any) -> PredictionView:
        """The view of one prediction: logit lens, funnel and residual stream (`settings` as `report`'s)."""
        return PredictionView(self.inside, self.report(position, **settings), self.lang)

    def grid(self, position: int | None = None) -> LensGridView:
        """The logit lens over every position of the run (`position` outlined)."""
        return LensGridView(self.inside, self.lang, self.default_position if position is None else position)

    def body_html(self) -> str:
        return self.grid().body_html() + self.at().body_html()
