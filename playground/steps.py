"""One step at a time (单步): a run the learner makes token by token. At each step they see the next token's whole
distribution (the Inside tab's sampling funnel), pick any token or let the sampler pick, undo, go on; the result is
saved as a run like any other (history, branch, Inside).

Every step is a run of the one decoding loop (`Playground.start` with `forced_ids`): the prompt, then the tokens picked
so far taken as forced steps, then one step the sampler takes freely with the run's settings and seed. The generators
draw at every step, forced or not, so the sampler's pick at step i is the i-th draw of the run's own generator: a run
whose every token was the sampler's is the run Generate gives with that seed. Saving runs the picks once more through
the loop, which makes their records (probability, rank, entropy, alternatives) and saves them as any run is saved.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .analysis.inside import funnel
from .backends.base import Engine
from .config import GenerationSettings
from .errors import Notice, PlaygroundError
from .generation import Generation
from .history import LOCAL_OWNER
from .records import GenerationResult, TokenRecord
from .service import Playground
from .text import TokenCodec

STEP_CHOICES = 20  # the next token's candidates offered at each step (the raw distribution's top)


@dataclass(frozen=True)
class StepRun:
    """A run being made one step at a time: where it runs, its prompt and settings (with the seed every step draws
    with), and the tokens taken so far, each picked by hand or by the sampler."""

    prompt: str
    settings: GenerationSettings
    model: str | None = None
    backend: str | None = None
    variant: str | None = None
    picks: tuple[int, ...] = ()
    by_hand: tuple[bool, ...] = ()

    def pick(self, token_id: int, by_hand: bool) -> "StepRun":
        return replace(self, picks=(*self.picks, int(token_id)), by_hand=(*self.by_hand, bool(by_hand)))

    def undo(self) -> "StepRun":
        return replace(self, picks=self.picks[:-1], by_hand=self.by_hand[:-1])

    @property
    def step(self) -> int:
        """Tokens taken so far."""
        return len(self.picks)


@dataclass
class Step:
    """What the learner sees before the next step: the run so far, and (unless it has ended) the sampler's pick for
    the next token with the distribution it came from."""

    run: StepRun
    result: GenerationResult  # the loop's run: its tokens are the picks, then the sampler's pick when `next` is set
    next: TokenRecord | None  # the sampler's pick (its record holds the raw distribution's top); None: the run ended
    funnel: list[dict] = field(default_factory=list)  # the run's processors one at a time on the next token's logits
    ended: str | None = None  # why there is no next step: eos, stop_sequence or length

    @property
    def so_far(self) -> GenerationResult:
        """The run as the learner made it, without the sampler's pending pick."""
        return replace(self.result, tokens=self.result.tokens[:self.run.step])


def start_steps(playground: Playground, prompt: str, settings: GenerationSettings, model: str | None = None,
                backend: str | None = None, variant: str | None = None) -> StepRun:
    """A new step run (no step taken yet); a serving engine, which takes whole requests, is refused."""
    runner = playground.backend(backend, variant, model)
    if isinstance(runner, Engine):
        raise PlaygroundError(key="steps.needs_local", field="backend", backend=runner.info.variant)
    settings = settings.validate().validate_for_context(runner.info.context_length).with_seed()
    return StepRun(prompt, settings, runner.info.model, runner.info.backend, runner.info.variant)


def _settings_for(settings: GenerationSettings, steps: int, **changes) -> GenerationSettings:
    """The run's settings for a loop run of `steps` tokens (min_new_tokens within them: the same end-of-text rule)."""
    return replace(settings, max_new_tokens=steps, min_new_tokens=min(settings.min_new_tokens, steps), **changes)


def _loop_run(playground: Playground, run: StepRun, settings: GenerationSettings, **kwargs) -> Generation:
    return playground.start(run.prompt, settings, backend=run.backend, variant=run.variant, model=run.model,
                            forced_ids=list(run.picks), **kwargs)


def preview(playground: Playground, run: StepRun, owner: str = LOCAL_OWNER) -> Step:
    """The next step's view: the loop runs the picks and one free step (not saved), the funnel shows its distribution."""
    most = run.settings.max_new_tokens
    steps = min(run.step + 1, most)
    settings = _settings_for(run.settings, steps, top_alternatives=max(run.settings.top_alternatives, STEP_CHOICES))
    loop = _loop_run(playground, run, settings, owner=owner)
    try:
        for _ in loop:  # a look, not a run: nothing is saved (as Playground.completion_of)
            pass
    finally:
        playground.admission.release(loop)
    result = loop.result
    if len(result.tokens) <= run.step:  # the last pick ended the text (end of text, a stop sequence), or max_new_tokens
        return Step(run, result, None, ended=result.finish_reason)
    nxt = result.tokens[run.step]
    # The funnel as the Inside tab draws it, on the backend's logits for the next token (one pass over the run so far).
    ids = [t.token_id for t in result.prompt_tokens + result.tokens[:run.step]]
    backend = playground.backend(run.backend, run.variant, run.model)
    logits, cache = backend.prefill(ids)  # (T, V)
    backend.release(cache)
    stages = funnel(logits[-1], ids, run.settings, nxt.token_id, loop.codec.eos_ids, len(result.prompt_tokens))
    return Step(run, result, nxt, stages)


def save_steps(playground: Playground, run: StepRun, session: str | None = None, owner: str = LOCAL_OWNER) -> GenerationResult:
    """The picks as a run of the loop, saved to the history like any other; a notice says how it was made."""
    if not run.picks:
        raise PlaygroundError(key="steps.nothing")
    loop = _loop_run(playground, run, _settings_for(run.settings, run.step), session=session, owner=owner)
    loop.result.notices.append(Notice(key="notice.step_by_step", steps=run.step, by_hand=sum(run.by_hand)))
    for _ in playground.stream(loop, session):
        pass
    return loop.result


def token_of_text(codec: TokenCodec, text: str) -> int:
    """The token that `text` is, when it is exactly one token of the model's tokenizer (" the" with its space for
    GPT-2); otherwise a PlaygroundError naming the tokens it is."""
    ids = codec.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
    if len(ids) != 1:
        labels = " · ".join(codec.label(i) for i in ids[:12]) or "—"
        raise PlaygroundError(key="steps.not_one_token", field="token", text=text, count=len(ids), tokens=labels)
    return ids[0]
