"""The one training engine: AdamW with warm-up and cosine decay, clipping, a progress bar, perplexity, atomic install.

Every model the playground trains (the English and Chinese demo models, fine-tuning) goes through
`train_causal_lm`, so a fix to the loop reaches all of them. Callers own the data: they hand in a
function that returns the next batch of token windows.

Why our own loop and not transformers' `Trainer`: the loop is short (nanoGPT's, in one screen),
the demo builds must stay bit-identical for a seed (tests check their perplexity), and fine-tuning
needs only what is here: gradient accumulation, weight decay, periodic validation, a progress
callback, a cancel flag checked every step, and mixed precision on CUDA (autocast + GradScaler for
fp16). The optional arguments are all off by default, and off they leave the demo numerics exactly
as before.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from ..errors import PlaygroundError, TrainingCancelled
from ..machine import torch_threads, training_threads


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


PRECISIONS = ("fp32", "bf16", "fp16")  # fp32 everywhere; bf16 and fp16 autocast on CUDA only


def train_causal_lm(model, next_batch: Callable[[], object], schedule: Schedule, desc: str = "Training", progress: bool = True, *,
                    accumulation_steps: int = 1, evaluate: Callable[[], float] | None = None, eval_every: int = 0,
                    on_step: Callable[[dict], None] | None = None, cancel=None, precision: str = "fp32",
                    threads: int | None = None, stop_early: Callable[[], bool] | None = None,
                    checkpoint: Callable[[dict], None] | None = None, checkpoint_every: int = 0, resume: dict | None = None,
                    accelerator=None) -> float:
    """Train `model` in place for `schedule.steps` optimizer steps; returns the last step's training loss.

    Next-token cross-entropy over every position of each (B, T + 1) window from `next_batch()`, AdamW
    over the parameters that require grad (so a LoRA model trains its adapters only), gradient norm
    clipped. Deterministic when the model was initialised and `next_batch` draws under fixed seeds.

    Optional, all off by default (and then the numerics are exactly those of the demo builds):
      accumulation_steps  batches per optimizer step; their losses are averaged (effective batch B * steps)
      evaluate, eval_every  `evaluate()` returns a validation loss; called every `eval_every` steps and
                          after the last one (eval_every > 0), the model back in train mode afterwards
      on_step             called after every optimizer step with a dict: step (1-based), total_steps,
                          train_loss (mean over the step's batches), learning_rate, tokens (targets so far),
                          elapsed_s, tokens_per_s (training time only), eta_s, val_loss (None unless evaluated)
      stop_early          asked after every evaluation (and its on_step): True ends the training there (early stopping;
                          the caller keeps what it needs of the run so far, as on_step saw it)
      cancel              a threading.Event checked before every step: when set, TrainingCancelled is raised
                          (inside `staged_folder`, that leaves nothing written)
      checkpoint, checkpoint_every  `checkpoint(state)` is called after every `checkpoint_every` steps (after that step's
                          evaluation and on_step) and when a cancel stops the run, with the loop's own state (`engine_state`):
                          the caller saves it with what it owns (the weights, its data order) to resume from
      resume              such a state: the run goes on after its step, with the optimizer's moments, the random number
                          generators and the counters as they were, so the steps after it are those of a run never stopped
                          (on the CPU bit for bit, with the same thread count); the model must already hold its weights
      accelerator         an `accelerate.Accelerator` of several processes (`data_parallel()`: the run was started by
                          `accelerate launch` or `torchrun`): the model is wrapped for data parallelism (DDP: each process
                          computes its own batches' gradients, averaged across processes), a cancel in any process stops
                          all of them at the same step, and the losses reported are the mean over processes
      precision           fp32; on CUDA also bf16 (autocast) or fp16 (autocast and a GradScaler)
      threads             torch threads on the CPU (None: machine.training_threads(), the cores other processes leave
                          free as the run starts). The same seed gives the same weights for the same thread count only.
    """
    with torch_threads(threads or training_threads()):
        return _train(model, next_batch, schedule, desc, progress, accumulation_steps, evaluate, eval_every, on_step, cancel,
                      precision, stop_early, checkpoint, checkpoint_every, resume, accelerator)


def engine_state(step: int, optimizer, scaler, tokens: int, train_s: float) -> dict:
    """What the loop needs to go on after `step` as if it had never stopped: the optimizer's moments and step counts, the
    loss scaler's, the random number generators (dropout draws from torch's global one), and its counters."""
    import torch

    return {"step": step, "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else None,
            "rng_cpu": torch.get_rng_state(), "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "tokens": tokens, "train_s": train_s}


def _restore(state: dict, optimizer, scaler) -> None:
    import torch

    optimizer.load_state_dict(state["optimizer"])
    if scaler and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng_cpu"])
    if state.get("rng_cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])


def data_parallel():
    """The Accelerator of this process when it is one of several (started by `accelerate launch` or `torchrun`, which set
    WORLD_SIZE), else None: one process trains alone, as the demo builds do. Mixed precision stays the engine's own
    (autocast and a GradScaler), so the Accelerator is asked for none."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


def _train(model, next_batch, schedule, desc, progress, accumulation_steps, evaluate, eval_every, on_step, cancel,
           precision, stop_early=None, checkpoint=None, checkpoint_every=0, resume=None, accelerator=None) -> float:
    """train_causal_lm's loop, in the threads it chose."""
    import torch
    from tqdm.auto import tqdm

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    trainable = [p for _, p in named]
    no_decay = [p for n, p in named if p.dim() < 2]
    decay = [p for n, p in named if p.dim() >= 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": schedule.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=schedule.learning_rate,
        betas=schedule.betas,
    )
    device = trainable[0].device
    autocast, scaler = mixed_precision(precision, device)
    processes = accelerator.num_processes if accelerator is not None else 1
    # Several processes: the forward runs through DDP, whose backward averages the gradients across them.
    forward = accelerator.prepare_model(model) if processes > 1 else model
    model.train()
    step_loss = float("nan")
    tokens, train_s, first = 0, 0.0, 0
    if resume is not None:
        _restore(resume, optimizer, scaler)
        tokens, train_s, first = resume["tokens"], resume["train_s"], resume["step"]
    started = time.perf_counter() - train_s  # elapsed and eta count the time before a resume too
    bar = tqdm(range(first, schedule.steps), desc=desc, unit="step", disable=not progress, initial=first, total=schedule.steps)
    for step in bar:
        if _cancelled(cancel, accelerator, processes):
            bar.close()
            model.eval()
            if checkpoint is not None and step > first:  # the steps since the start or the last checkpoint are kept
                checkpoint(engine_state(step, optimizer, scaler, tokens, train_s))
            raise TrainingCancelled(key="train.cancelled_at", step=step + 1, total=schedule.steps)
        step_started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = schedule.lr_at(step)
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for micro in range(accumulation_steps):
            batch = next_batch().to(device)  # (B, T + 1), this process's share of the step's batch
            # Gradients are averaged across processes once per step, at its last batch.
            with accelerator.no_sync(forward) if processes > 1 and micro < accumulation_steps - 1 else nullcontext():
                with autocast():
                    logits = forward(batch[:, :-1]).logits  # (B, T, V)
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1))
                if accumulation_steps > 1:
                    loss = loss / accumulation_steps  # the step's gradient is the mean over its batches
                (scaler.scale(loss) if scaler else loss).backward()
            step_loss += loss.item()
            tokens += batch[:, 1:].numel() * processes
        if processes > 1:  # the step's loss over every process's batches
            step_loss = accelerator.reduce(torch.tensor(step_loss, device=device), "mean").item()
        if scaler:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(trainable, schedule.clip_norm)
        if scaler:
            scaler.step(optimizer)  # skips the step when a gradient overflowed in fp16
            scaler.update()
        else:
            optimizer.step()
        train_s += time.perf_counter() - step_started
        done = step + 1
        val_loss = None
        if evaluate is not None and eval_every > 0 and (done % eval_every == 0 or done == schedule.steps):
            val_loss = evaluate()
            model.train()
        if step % 10 == 0 or val_loss is not None:
            bar.set_postfix(loss=f"{step_loss:.3f}", **({"val": f"{val_loss:.3f}"} if val_loss is not None else {}))
        if on_step is not None:
            elapsed = time.perf_counter() - started
            on_step({"step": done, "total_steps": schedule.steps, "train_loss": step_loss, "learning_rate": schedule.lr_at(step),
                     "tokens": tokens, "elapsed_s": elapsed, "tokens_per_s": tokens / train_s if train_s > 0 else 0.0,
                     "eta_s": elapsed / done * (schedule.steps - done), "val_loss": val_loss})
        if val_loss is not None and stop_early is not None and stop_early():
            break
        if checkpoint is not None and checkpoint_every > 0 and done % checkpoint_every == 0 and done < schedule.steps:
            checkpoint(engine_state(done, optimizer, scaler, tokens, train_s))
    bar.close()
    model.eval()
    return step_loss


def _cancelled(cancel, accelerator, processes: int) -> bool:
    """Whether to stop before this step: `cancel` set, in any process when there are several (they stop together, or the
    others would wait for its gradients for ever)."""
    wanted = cancel is not None and cancel.is_set()
    if processes > 1:
        import torch

        return accelerator.reduce(torch.tensor(float(wanted), device=accelerator.device), "sum").item() > 0
    return wanted


def mixed_precision(precision: str, device) -> tuple[Callable[[], object], object | None]:
    """(a context manager factory for the forward pass, a GradScaler or None) for `precision` on `device`."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "fp32":
        return nullcontext, None
    if device.type != "cuda":
        raise ValueError(f"{precision} mixed precision runs on CUDA only; use fp32 on {device.type}")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    # fp16's narrow exponent underflows small gradients: scale the loss up, unscale before clipping. bf16 needs no scaler.
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    return (lambda: torch.autocast("cuda", dtype=dtype)), scaler


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


def blocks_loss(model, blocks, batch_size: int = 8, precision: str = "fp32") -> float:
    """Mean next-token cross-entropy over (N, T + 1) blocks: every token but each block's first is a target."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    autocast, _ = mixed_precision(precision, device)
    nll_sum, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(blocks), batch_size):
            batch = blocks[start : start + batch_size].to(device)  # (b, T + 1)
            with autocast():
                logits = model(batch[:, :-1]).logits  # (b, T, V)
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1),
                                                    reduction="sum")
            nll_sum += nll.item()
            count += batch[:, 1:].numel()
    return nll_sum / count


def unigram_perplexity(train_ids: list[int], val_ids: list[int], vocab_size: int) -> float:
    """Perplexity of an add-one-smoothed unigram model fitted on the training tokens: the bar to beat."""
    counts = Counter(train_ids)
    total = len(train_ids) + vocab_size
    nll = -sum(math.log((counts[t] + 1) / total) for t in val_ids) / len(val_ids)
    return math.exp(nll)


# --- output -------------------------------------------------------------------------------------


OWNER_FILE = ".owner-pid"  # in a staging folder: the process writing it


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_abandoned_stages(out_dir: Path) -> list[Path]:
    """Remove the staging folders of `out_dir` that a killed build left behind (`.NAME-XXXXXXXX` beside it, as
    `staged_folder` makes them), and only those: a folder whose writer is still running is left alone."""
    pattern = re.compile(rf"^\.{re.escape(out_dir.name)}-[a-z0-9_]{{8}}$")
    removed = []
    for folder in out_dir.parent.iterdir() if out_dir.parent.is_dir() else ():
        if not folder.is_dir() or not pattern.match(folder.name):
            continue
        try:
            pid = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            pid = None  # written before owners were recorded, or killed before it wrote one
        if pid is not None and (pid == os.getpid() or _alive(pid)):
            continue  # a build still in progress (in this process or another)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


@contextmanager
def staged_folder(out_dir: Path, replace: bool = True) -> Iterator[Path]:
    """Yield an empty folder to write a model into; it replaces `out_dir` only when the block completes.

    The folder lives in a temporary sibling of `out_dir` (same file system, so the final rename is
    atomic); an interrupted or failed build leaves the old folder, or nothing, never half a model.
    With `replace=False` an `out_dir` that appeared meanwhile is kept and PlaygroundError raised
    (a fine-tune never overwrites a model).
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_stages(out_dir)
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}-", dir=out_dir.parent) as tmp:
        (Path(tmp) / OWNER_FILE).write_text(str(os.getpid()))
        staged = Path(tmp) / out_dir.name
        staged.mkdir()
        yield staged
        if out_dir.exists() and not replace:
            raise PlaygroundError(key="train.name_taken", name=out_dir.name, folder=out_dir.parent.name)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staged.rename(out_dir)
