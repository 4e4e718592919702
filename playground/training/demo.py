"""Build the offline demo GPT-2: a small GPT2LMHeadModel and byte-level BPE trained on Python's own docs.

The hub is not always reachable, so the playground ships the recipe for a model instead of weights:
`python -m playground.training.demo` trains it (a few minutes on two CPU cores, deterministic for a
seed) and caches it in `models/demo-gpt2/` in standard Hugging Face format, so every loading path
treats it like any other local checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from ..paths import demo_model_dir

EOS = "<|endoftext|>"
REPORT_FILE = "training_report.json"


@dataclass(frozen=True)
class DemoRecipe:
    """Everything that determines the demo model; the same recipe and seed give the same weights."""

    n_layer: int = 3
    n_embd: int = 192
    n_head: int = 3
    context: int = 256  # n_positions; also the training block size, so every position is trained
    vocab_size: int = 4096
    steps: int = 700
    batch_size: int = 4  # sequences of `context` tokens per step
    learning_rate: float = 3e-3
    warmup_steps: int = 40
    dropout: float = 0.1
    seed: int = 1234
    max_chars: int | None = None  # tests train on a slice of the corpus


# --- corpus -------------------------------------------------------------------------------------


def load_corpus(max_chars: int | None = None) -> str:
    """English documentation text that ships with every CPython: the pydoc topics.

    The topics are hard-wrapped, indented reST; reflowing each paragraph onto one line lets a tiny
    model spend its capacity on words rather than on indentation.
    """
    from pydoc_data.topics import topics

    paragraphs: list[str] = []
    for name in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[name]):
            text = re.sub(r"\s+", " ", block).strip()
            if text:
                paragraphs.append(text)
    corpus = "\n\n".join(paragraphs)
    return corpus[:max_chars] if max_chars else corpus


def split_corpus(corpus: str, every: int = 10, chunk_paragraphs: int = 8) -> tuple[str, str]:
    """Hold out every `every`-th chunk of paragraphs for validation (deterministic, spread over all topics)."""
    paragraphs = corpus.split("\n\n")
    chunks = ["\n\n".join(paragraphs[i : i + chunk_paragraphs]) for i in range(0, len(paragraphs), chunk_paragraphs)]
    train = [c for i, c in enumerate(chunks) if i % every != every - 1]
    val = [c for i, c in enumerate(chunks) if i % every == every - 1]
    return "\n\n".join(train), "\n\n".join(val)


# --- tokenizer ----------------------------------------------------------------------------------


def train_tokenizer(train_text: str, vocab_size: int, out_dir: Path):
    """Byte-level BPE (the GPT-2 scheme) trained on the training split; saved as a GPT2TokenizerFast."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([train_text], vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS], show_progress=False)
    raw_dir = out_dir / "_bpe"
    raw_dir.mkdir(parents=True)
    bpe.save_model(str(raw_dir))
    tokenizer = GPT2TokenizerFast(
        vocab_file=str(raw_dir / "vocab.json"),
        merges_file=str(raw_dir / "merges.txt"),
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        model_max_length=None,
    )
    shutil.rmtree(raw_dir)
    return tokenizer


# --- evaluation ---------------------------------------------------------------------------------


def unigram_perplexity(train_ids: list[int], val_ids: list[int], vocab_size: int) -> float:
    """Perplexity of a add-one-smoothed unigram model fitted on the training tokens: the bar to beat."""
    counts = Counter(train_ids)
    total = len(train_ids) + vocab_size
    nll = -sum(math.log((counts[t] + 1) / total) for t in val_ids) / len(val_ids)
    return math.exp(nll)


def model_perplexity(model, ids, block: int) -> float:
    """Perplexity over `ids` in non-overlapping windows of `block` tokens (every token but each window's first is scored)."""
    import torch

    model.eval()
    nll_sum, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(ids) - 1, block):
            window = ids[start : start + block].unsqueeze(0)  # (1, T)
            if window.shape[1] < 2:
                break
            logits = model(window).logits.float()  # (1, T, V)
            nll = torch.nn.functional.cross_entropy(logits[0, :-1], window[0, 1:], reduction="sum")
            nll_sum += nll.item()
            count += window.shape[1] - 1
    return math.exp(nll_sum / count)


# --- training -----------------------------------------------------------------------------------


def build_demo_model(out_dir: Path | None = None, recipe: DemoRecipe = DemoRecipe(), progress: bool = True) -> dict:
    """Train the demo model into `out_dir` (default `models/demo-gpt2/`) and return its training report.

    The folder appears only when complete: training writes into a temporary sibling folder that is
    renamed into place at the end, so an interrupted build never leaves a half-written model behind.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import GPT2Config, GPT2LMHeadModel, GenerationConfig

    out_dir = Path(out_dir or demo_model_dir())
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)

    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}-", dir=out_dir.parent) as tmp:
        tmp_dir = Path(tmp) / out_dir.name
        train_text, val_text = split_corpus(load_corpus(recipe.max_chars))
        tokenizer = train_tokenizer(train_text, recipe.vocab_size, tmp_dir)
        train_ids = torch.tensor(tokenizer(train_text)["input_ids"], dtype=torch.long)
        val_ids = torch.tensor(tokenizer(val_text)["input_ids"], dtype=torch.long)

        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=recipe.context,
            n_embd=recipe.n_embd,
            n_layer=recipe.n_layer,
            n_head=recipe.n_head,
            resid_pdrop=recipe.dropout,
            embd_pdrop=recipe.dropout,
            attn_pdrop=recipe.dropout,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            tie_word_embeddings=True,
        )
        model = GPT2LMHeadModel(config)
        no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
            lr=recipe.learning_rate,
            betas=(0.9, 0.95),
        )

        def lr_at(step: int) -> float:
            # Linear warm-up, then cosine decay to 10% of the peak.
            if step < recipe.warmup_steps:
                return recipe.learning_rate * (step + 1) / recipe.warmup_steps
            progress_frac = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
            return recipe.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_frac)))

        block = recipe.context
        model.train()
        bar = tqdm(range(recipe.steps), desc="Training demo GPT-2", unit="step", disable=not progress)
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            starts = torch.randint(0, len(train_ids) - block - 1, (recipe.batch_size,), generator=generator)
            batch = torch.stack([train_ids[s : s + block + 1] for s in starts])  # (B, block + 1)
            logits = model(batch[:, :-1]).logits  # (B, block, V)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if step % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()

        report = {
            "recipe": asdict(recipe),
            "train_tokens": len(train_ids),
            "val_tokens": len(val_ids),
            "val_perplexity": round(model_perplexity(model, val_ids, block), 2),
            "unigram_val_perplexity": round(unigram_perplexity(train_ids.tolist(), val_ids.tolist(), len(tokenizer)), 2),
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_seconds": round(time.perf_counter() - started, 1),
        }
        report["ratio_to_unigram"] = round(report["val_perplexity"] / report["unigram_val_perplexity"], 3)

        # Inference defaults: no dropout, and sampling settings the UI may read as hints.
        model.config.resid_pdrop = model.config.embd_pdrop = model.config.attn_pdrop = 0.0
        model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id)
        model.save_pretrained(tmp_dir, safe_serialization=True)
        tokenizer.save_pretrained(tmp_dir)
        (tmp_dir / REPORT_FILE).write_text(json.dumps(report, indent=2))

        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp_dir.rename(out_dir)
    return report


def is_built(out_dir: Path | None = None) -> bool:
    """True when a complete demo model is cached (the report is written last, just before the rename)."""
    out_dir = Path(out_dir or demo_model_dir())
    return (out_dir / REPORT_FILE).is_file() and (out_dir / "model.safetensors").is_file()


def ensure_demo_model(out_dir: Path | None = None, progress: bool = True) -> Path:
    """Return the demo model's folder, building it first if it is not cached yet."""
    out_dir = Path(out_dir or demo_model_dir())
    if not is_built(out_dir):
        print(f"Building the offline demo GPT-2 in {out_dir} (once, a few minutes on a CPU)...", flush=True)
        build_demo_model(out_dir, progress=progress)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m playground.training.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="target folder (default: models/demo-gpt2)")
    parser.add_argument("--steps", type=int, default=DemoRecipe.steps)
    parser.add_argument("--seed", type=int, default=DemoRecipe.seed)
    parser.add_argument("--force", action="store_true", help="rebuild even if a model is cached")
    args = parser.parse_args(argv)
    out_dir = args.out or demo_model_dir()
    if is_built(out_dir) and not args.force:
        print(f"Demo model already built in {out_dir} (use --force to rebuild).")
        print((Path(out_dir) / REPORT_FILE).read_text())
        return
    report = build_demo_model(out_dir, DemoRecipe(steps=args.steps, seed=args.seed))
    print(json.dumps(report, indent=2))
    print(f"Saved to {out_dir}")


if __name__ == "__main__":
    main()
