"""The one training engine: AdamW with warm-up and cosine decay, clipping, a progress bar, perplexity, atomic install.

Every model the playground trains (the English and Chinese demo models, fine-tuning) goes through
`train_causal_lm`, so a fix to the loop reaches all of them. Callers own the data: they hand in a
function that returns the next batch of token windows.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Schedule:
    """Optimiser and learning-rate schedule: linear warm-up, then cosine decay to `final_lr_fraction` of the peak."""

    steps: int
    learning_rate: float
    warmup_steps: int
    weight_decay: float = 0.1  # matrices only; biases, LayerNorm and other 1-D parameters are not decayed
    betas: tuple[float, float] = (0.9, 0.95)
    clip_norm: float = 1.0
    final_lr_fraction: float = 0.1

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.learning_rate * (step + 1) / self.warmup_steps
        progress_frac = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        floor = self.final_lr_fraction
        return self.learning_rate * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress_frac)))


def random_windows(ids, block: int, batch_size: int, generator, starts=None):
    """A batch of `block + 1`-token windows of `ids`, (B, block + 1): inputs are [:, :-1], targets [:, 1:].

    Without `starts` a window may begin anywhere; with `starts` (a 1-D tensor of allowed offsets, each
    at most `len(ids) - block - 1`) it begins at one of them, e.g. at the start of a text.
    """
    import torch

    if starts is None:
        offsets = torch.randint(0, len(ids) - block - 1, (batch_size,), generator=generator)
    else:
        offsets = starts[torch.randint(0, len(starts), (batch_size,), generator=generator)]
    return torch.stack([ids[s : s + block + 1] for s in offsets])  # (B, block + 1)


def train_causal_lm(model, next_batch: Callable[[], object], schedule: Schedule, desc: str = "Training", progress: bool = True) -> float:
    """Train `model` in place on `schedule.steps` batches from `next_batch()`; returns the last batch's loss.

    Next-token cross-entropy over every position of each (B, T + 1) window, AdamW, gradient norm
    clipped. Deterministic when the model was initialised and `next_batch` draws under fixed seeds.
    """
    import torch
    from tqdm.auto import tqdm

    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": schedule.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=schedule.learning_rate,
        betas=schedule.betas,
    )
    model.train()
    loss = torch.tensor(float("nan"))
    bar = tqdm(range(schedule.steps), desc=desc, unit="step", disable=not progress)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = schedule.lr_at(step)
        batch = next_batch()  # (B, T + 1)
        logits = model(batch[:, :-1]).logits  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), schedule.clip_norm)
        optimizer.step()
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    return loss.item()


# --- evaluation ---------------------------------------------------------------------------------


def windows_perplexity(model, windows: Iterable) -> float:
    """Perplexity over 1-D token windows: every token but each window's first is scored, given the ones before it."""
    import torch

    model.eval()
    nll_sum, count = 0.0, 0
    with torch.inference_mode():
        for ids in windows:
            window = ids.unsqueeze(0)  # (1, T)
            if window.shape[1] < 2:
                continue
            logits = model(window).logits.float()  # (1, T, V)
            nll = torch.nn.functional.cross_entropy(logits[0, :-1], window[0, 1:], reduction="sum")
            nll_sum += nll.item()
            count += window.shape[1] - 1
    return math.exp(nll_sum / count)


def model_perplexity(model, ids, block: int) -> float:
    """Perplexity over `ids` in non-overlapping windows of `block` tokens."""
    return windows_perplexity(model, (ids[start : start + block] for start in range(0, len(ids) - 1, block)))


def unigram_perplexity(train_ids: list[int], val_ids: list[int], vocab_size: int) -> float:
    """Perplexity of an add-one-smoothed unigram model fitted on the training tokens: the bar to beat."""
    counts = Counter(train_ids)
    total = len(train_ids) + vocab_size
    nll = -sum(math.log((counts[t] + 1) / total) for t in val_ids) / len(val_ids)
    return math.exp(nll)


# --- output -------------------------------------------------------------------------------------


@contextmanager
def staged_folder(out_dir: Path) -> Iterator[Path]:
    """Yield an empty folder to write a model into; it replaces `out_dir` only when the block completes.

    The folder lives in a temporary sibling of `out_dir` (same file system, so the final rename is
    atomic); an interrupted or failed build leaves the old folder, or nothing, never half a model.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}-", dir=out_dir.parent) as tmp:
        staged = Path(tmp) / out_dir.name
        staged.mkdir()
        yield staged
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staged.rename(out_dir)
