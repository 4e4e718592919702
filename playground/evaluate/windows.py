"""The sliding windows of a perplexity evaluation: which tokens each window feeds the model and which it scores."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    """Tokens [begin, end) of the stream go through the model; the tokens [first_scored, end) are scored.

    In transformers' terms: labels = input_ids[begin:end] with -100 before `first_scored`, and the model's own shift
    means the window's first token is never scored (nothing comes before it inside the window)."""

    begin: int
    end: int
    first_scored: int

    @property
    def scored(self) -> int:
        return self.end - self.first_scored


def sliding_windows(n_tokens: int, window: int, stride: int) -> list[Window]:
    """The windows of transformers' perplexity guide ("Perplexity of fixed-length models"), for a stream of `n_tokens`.

    A window of at most `window` tokens starts every `stride` tokens; each scores only the tokens that the window
    before it did not (`trg_len = end_loc - prev_end_loc` in the guide; labels -100 for the overlap), so with
    stride < window every token but the stream's first is scored exactly once, each with at least
    window - stride tokens of context (fewer in the first window). With stride == window the windows do not overlap
    and the first token of every window after the first is not scored, as in the guide. The last window ends at the
    stream's end (and may be shorter); the loop stops there.
    """
    assert 1 <= stride <= window and n_tokens >= 1
    windows: list[Window] = []
    previous_end = 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + window, n_tokens)
        target_length = end - previous_end  # the tokens no earlier window scored
        windows.append(Window(begin, end, max(end - target_length, begin + 1)))
        previous_end = end
        if end == n_tokens:
            break
    return windows
