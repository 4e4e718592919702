"""Build the offline demo GPT-2 models: English (byte-level BPE, Python's docs) and Chinese (characters, fortunes-zh).

The hub is not always reachable, so the playground ships recipes for models instead of weights:
`python -m playground.training.demo` trains the English one and `... --zh` the Chinese one (a few
minutes each on two CPU cores, deterministic for a seed). They are cached in `models/demo-gpt2/`
and `models/demo-zh-gpt2/` in standard Hugging Face format, so every loading path treats them like
any other local checkpoint. Both train through the shared engine (`playground.training.engine`).

The Chinese model is laid out like the uer/gpt2-chinese-cluecorpussmall checkpoints people run:
a GPT2LMHeadModel with a character-level BertTokenizer (`vocab.txt`, `[CLS]` begins a text,
`[SEP]` ends it), so it exercises the same loading and display paths as those models.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from ..machine import torch_threads, training_threads
from ..paths import demo_model_dir, demo_zh_model_dir
from .corpus_zh import chunk_text, load_zh_texts, split_texts
from .engine import Schedule, random_windows, staged_folder, train_causal_lm, unigram_perplexity, windows_perplexity

EOS = "<|endoftext|>"
REPORT_FILE = "training_report.json"
# The Chinese vocabulary starts with BERT's special tokens, so their ids are 0..4 in this order.
ZH_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PERPLEXITY_BAR = 0.4  # a demo model must reach at most 40% of the unigram baseline's validation perplexity


@dataclass(frozen=True)
class DemoRecipe:
    """Everything that determines the English demo model; the same recipe and seed give the same weights."""

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
    # torch threads; None: the cores that other processes leave free as the build starts (machine.training_threads).
    # The same recipe and seed give the same weights for the same thread count.
    threads: int | None = None


@dataclass(frozen=True)
class ZhDemoRecipe(DemoRecipe):
    """Everything that determines the Chinese demo model (character-level BertTokenizer, fortunes-zh text)."""

    context: int = 128  # poems and sayings are short: a window holds one to a few whole texts
    vocab_size: int = 6000  # at most: the characters seen `min_char_count` times in the training split
    min_char_count: int = 2  # rarer characters become [UNK], as they would with a fixed vocabulary
    steps: int = 1200  # about five passes over the 240 k training tokens; dropout keeps the later ones useful
    batch_size: int = 8


# --- English corpus -----------------------------------------------------------------------------


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


# --- tokenizers ---------------------------------------------------------------------------------


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


def bert_words(text: str) -> list[str]:
    """The words BertTokenizer's basic tokenizer sees: lower-cased, one per Han character or punctuation mark, Latin runs whole."""
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    normalized = BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True).normalize_str(text)
    return [word for word, _ in BertPreTokenizer().pre_tokenize_str(normalized)]


def train_zh_tokenizer(train_texts: list[str], vocab_size: int, min_count: int, out_dir: Path):
    """A character-level BERT vocabulary from the training split, saved the way uer's Chinese GPT-2 models ship it.

    Every Han character and punctuation mark is a word of its own; the rarer Latin words and digit
    runs are spelled as a character plus `##`-continuations (`debian` -> d ##e ##b ##i ##a ##n), as in
    bert-base-chinese's vocabulary. Writes vocab.txt, tokenizer_config.json (tokenizer_class
    BertTokenizer) and special_tokens_map.json; returns the fast tokenizer (same ids, quicker).
    """
    from transformers import BertTokenizer, BertTokenizerFast

    counts: Counter[str] = Counter()
    for text in train_texts:
        for word in bert_words(text):
            counts[word[0]] += 1
            counts.update("##" + char for char in word[1:])
    # Most frequent first, ties broken by the piece itself: the same text always gives the same ids.
    pieces = sorted((piece for piece, n in counts.items() if n >= min_count), key=lambda piece: (-counts[piece], piece))
    vocab = [*ZH_SPECIAL_TOKENS, *pieces[: vocab_size - len(ZH_SPECIAL_TOKENS)]]
    vocab_file = out_dir / "vocab.txt"
    vocab_file.write_text("".join(piece + "\n" for piece in vocab), encoding="utf-8")
    BertTokenizer(str(vocab_file), model_max_length=None).save_pretrained(out_dir)
    return BertTokenizerFast(vocab_file=str(vocab_file), model_max_length=None)


# --- data for the engine ------------------------------------------------------------------------


@dataclass
class TrainingData:
    """A recipe's tokenizer and tokens, ready for the engine."""

    tokenizer: object
    train_ids: object  # 1-D LongTensor: the training split as one stream
    window_starts: object | None  # 1-D LongTensor of offsets a training window may begin at; None: anywhere
    val_windows: list  # 1-D LongTensors, each scored from its second token
    unigram_val_ids: list[int]  # the validation tokens the unigram baseline is scored on
    config: dict  # GPT2Config fields that depend on the tokenizer
    extra_report: dict


def english_data(recipe: DemoRecipe, out_dir: Path) -> TrainingData:
    """Python's docs in byte-level BPE; windows begin anywhere in the stream, validation in consecutive blocks."""
    import torch

    train_text, val_text = split_corpus(load_corpus(recipe.max_chars))
    tokenizer = train_tokenizer(train_text, recipe.vocab_size, out_dir)
    train_ids = torch.tensor(tokenizer(train_text)["input_ids"], dtype=torch.long)
    val_ids = torch.tensor(tokenizer(val_text)["input_ids"], dtype=torch.long)
    block = recipe.context
    return TrainingData(
        tokenizer=tokenizer,
        train_ids=train_ids,
        window_starts=None,
        val_windows=[val_ids[start : start + block] for start in range(0, len(val_ids) - 1, block)],
        unigram_val_ids=val_ids.tolist(),
        config={"bos_token_id": tokenizer.eos_token_id, "eos_token_id": tokenizer.eos_token_id},
        extra_report={},
    )


def chinese_data(recipe: ZhDemoRecipe, out_dir: Path) -> TrainingData:
    """fortunes-zh in characters: each text is `[CLS] text [SEP]`, and every training window begins at a `[CLS]`.

    That is how the model is prompted (the prompt follows `[CLS]` at position 0), so validation
    scores each held-out text on its own, from `[CLS]`, and so does the unigram baseline.
    """
    import torch

    train_texts, val_texts = split_texts(load_zh_texts(recipe.max_chars))
    # Texts longer than a window are split so that no part of them is left untrained.
    train_texts = [piece for text in train_texts for piece in chunk_text(text, recipe.context - 2)]
    val_texts = [piece for text in val_texts for piece in chunk_text(text, recipe.context - 2)]
    tokenizer = train_zh_tokenizer(train_texts, recipe.vocab_size, recipe.min_char_count, out_dir)
    train_encoded = tokenizer(train_texts)["input_ids"]  # each [CLS] ... [SEP]
    val_encoded = [ids[: recipe.context] for ids in tokenizer(val_texts)["input_ids"]]
    lengths = torch.tensor([len(ids) for ids in train_encoded])
    train_ids = torch.tensor([token for ids in train_encoded for token in ids], dtype=torch.long)
    starts = torch.cumsum(lengths, 0) - lengths  # offset of each text's [CLS]
    starts = starts[starts <= len(train_ids) - recipe.context - 1]
    val_scored = [token for ids in val_encoded for token in ids[1:]]
    return TrainingData(
        tokenizer=tokenizer,
        train_ids=train_ids,
        window_starts=starts,
        val_windows=[torch.tensor(ids, dtype=torch.long) for ids in val_encoded],
        unigram_val_ids=val_scored,
        config={"bos_token_id": tokenizer.cls_token_id, "eos_token_id": tokenizer.sep_token_id,
                "pad_token_id": tokenizer.pad_token_id, "tokenizer_class": "BertTokenizer"},
        extra_report={
            "corpus": "Debian fortunes-zh: tang300, song100, chinese",
            "train_texts": len(train_texts),
            "val_texts": len(val_texts),
            # A flood of [UNK] would mean a vocabulary that does not fit the text (one cause of 乱码).
            "val_unk_fraction": round(val_scored.count(tokenizer.unk_token_id) / len(val_scored), 4),
        },
    )


# --- building -----------------------------------------------------------------------------------


def default_dir(recipe: DemoRecipe) -> Path:
    return demo_zh_model_dir() if isinstance(recipe, ZhDemoRecipe) else demo_model_dir()


def build_demo_model(out_dir: Path | None = None, recipe: DemoRecipe = DemoRecipe(), progress: bool = True) -> dict:
    """Train a demo model (English, or Chinese for a ZhDemoRecipe) into `out_dir` and return its training report.

    The folder appears only when complete (see `engine.staged_folder`).
    """
    import torch
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

    zh = isinstance(recipe, ZhDemoRecipe)
    out_dir = Path(out_dir or default_dir(recipe))
    started = time.perf_counter()
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)

    with staged_folder(out_dir) as staged:
        data = chinese_data(recipe, staged) if zh else english_data(recipe, staged)
        config = GPT2Config(
            vocab_size=len(data.tokenizer),
            n_positions=recipe.context,
            n_embd=recipe.n_embd,
            n_layer=recipe.n_layer,
            n_head=recipe.n_head,
            resid_pdrop=recipe.dropout,
            embd_pdrop=recipe.dropout,
            attn_pdrop=recipe.dropout,
            tie_word_embeddings=True,
            **data.config,
        )
        model = GPT2LMHeadModel(config)
        schedule = Schedule(steps=recipe.steps, learning_rate=recipe.learning_rate, warmup_steps=recipe.warmup_steps)
        threads = recipe.threads or training_threads()
        train_causal_lm(
            model,
            lambda: random_windows(data.train_ids, recipe.context, recipe.batch_size, generator, data.window_starts),
            schedule,
            desc="Training Chinese demo GPT-2" if zh else "Training demo GPT-2",
            progress=progress,
            threads=threads,
        )

        # Scored in the training's threads: torch's default (every core) beside a busy process makes each thread wait for
        # the other (machine.training_threads); the Chinese validation split, 571 texts one at a time, took 144 s so
        # against 3.9 s of CPU in one thread (2 cores, load 13, 2026-12-05).
        with torch_threads(threads):
            val_perplexity = windows_perplexity(model, data.val_windows)
        report = {
            "recipe": asdict(recipe),
            "train_tokens": len(data.train_ids),
            "val_tokens": len(data.unigram_val_ids),
            "val_perplexity": round(val_perplexity, 2),
            "unigram_val_perplexity": round(unigram_perplexity(data.train_ids.tolist(), data.unigram_val_ids, len(data.tokenizer)), 2),
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_seconds": round(time.perf_counter() - started, 1),
            "torch_threads": threads,
            **data.extra_report,
        }
        report["ratio_to_unigram"] = round(report["val_perplexity"] / report["unigram_val_perplexity"], 3)

        # Inference defaults: no dropout, and sampling settings the UI may read as hints.
        model.config.resid_pdrop = model.config.embd_pdrop = model.config.attn_pdrop = 0.0
        model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id)
        model.save_pretrained(staged, safe_serialization=True)
        if not zh:  # the Chinese tokenizer files were written by train_zh_tokenizer, as BertTokenizer writes them
            data.tokenizer.save_pretrained(staged)
        (staged / REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    return report


def is_built(out_dir: Path | None = None) -> bool:
    """True when a complete demo model is cached (the report is written last, just before the rename)."""
    out_dir = Path(out_dir or demo_model_dir())
    return (out_dir / REPORT_FILE).is_file() and (out_dir / "model.safetensors").is_file()


def ensure_demo_model(out_dir: Path | None = None, progress: bool = True, recipe: DemoRecipe | None = None) -> Path:
    """Return a demo model's folder (the English one unless `recipe` says otherwise), building it first if needed."""
    recipe = recipe or DemoRecipe()
    out_dir = Path(out_dir or default_dir(recipe))
    if not is_built(out_dir):
        which = "Chinese demo GPT-2" if isinstance(recipe, ZhDemoRecipe) else "demo GPT-2"
        print(f"Building the offline {which} in {out_dir} (once, a few minutes on a CPU)...", flush=True)
        build_demo_model(out_dir, recipe, progress=progress)
    return out_dir


def ensure_demo_zh_model(out_dir: Path | None = None, progress: bool = True) -> Path:
    """Return the Chinese demo model's folder, building it first if needed."""
    return ensure_demo_model(out_dir, progress, ZhDemoRecipe())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m playground.training.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--zh", action="store_true", help="build the Chinese demo model (needs Debian's fortunes-zh)")
    parser.add_argument("--out", type=Path, default=None, help="target folder (default: models/demo-gpt2, or models/demo-zh-gpt2 with --zh)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=DemoRecipe.seed)
    parser.add_argument("--force", action="store_true", help="rebuild even if a model is cached")
    args = parser.parse_args(argv)
    recipe_type = ZhDemoRecipe if args.zh else DemoRecipe
    recipe = recipe_type(steps=args.steps or recipe_type.steps, seed=args.seed)
    out_dir = args.out or default_dir(recipe)
    if is_built(out_dir) and not args.force:
        print(f"Demo model already built in {out_dir} (use --force to rebuild).")
        print((Path(out_dir) / REPORT_FILE).read_text(encoding="utf-8"))
        return
    report = build_demo_model(out_dir, recipe)
    print(json.dumps(report, indent=2, ensure_ascii=False))
    ratio = report["ratio_to_unigram"]
    verdict = "meets" if ratio <= PERPLEXITY_BAR else "MISSES"
    print(f"Validation perplexity {report['val_perplexity']} against a unigram baseline of {report['unigram_val_perplexity']}: "
          f"{ratio:.0%}, which {verdict} the bar of at most {PERPLEXITY_BAR:.0%}. Trained in {report['train_seconds']} s.")
    print(f"Saved to {out_dir}")


if __name__ == "__main__":
    main()
