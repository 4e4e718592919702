"""The offline demo model: deterministic for a seed, standard Hugging Face format, and it really learns."""

import re

from safetensors.torch import load_file

from playground.config import GenerationSettings
from playground.training.demo import DemoRecipe, build_demo_model, is_built, load_corpus, split_corpus

from .conftest import TINY_RECIPE


def test_same_seed_builds_the_same_weights(tmp_path, tiny_model_dir):
    build_demo_model(tmp_path / "again", DemoRecipe(**TINY_RECIPE), progress=False)
    first = load_file(tiny_model_dir / "model.safetensors")
    second = load_file(tmp_path / "again" / "model.safetensors")
    assert first.keys() == second.keys()
    assert all((first[k] == second[k]).all() for k in first)
    assert (tiny_model_dir / "tokenizer.json").read_text() == (tmp_path / "again" / "tokenizer.json").read_text()


def test_folder_is_standard_hugging_face_format(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert is_built(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, use_safetensors=True)
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.eos_token_id == model.config.eos_token_id
    assert tokenizer.decode(tokenizer("naïve café ✓")["input_ids"]) == "naïve café ✓"  # byte-level: lossless


def test_validation_split_is_held_out():
    train, val = split_corpus(load_corpus())
    assert len(val) > 0.05 * len(train)
    assert val[:500] not in train


def test_full_recipe_learns_well_beyond_a_unigram_model(tmp_path):
    """The real demo model (about 3 minutes on 2 cores): the bar is 40% of the unigram perplexity."""
    from playground.backends.torch_backend import TorchBackend
    from playground.generation import generate
    from playground.models import resolve_model

    out = tmp_path / "demo-gpt2"
    report = build_demo_model(out, DemoRecipe(), progress=False)
    assert report["val_perplexity"] <= 0.4 * report["unigram_val_perplexity"], report

    # Sampled continuations are made of real words from the documentation, not byte soup.
    source = resolve_model(str(out))
    backend = TorchBackend(source, device="cpu")
    corpus_words = set(re.findall(r"[A-Za-z]+", load_corpus()))
    text = " ".join(
        generate(backend, source, "The return value of a function is", GenerationSettings(max_new_tokens=60, seed=s, top_k=40)).text
        for s in range(3)
    )
    words = re.findall(r"[A-Za-z]+", text)
    assert len(words) > 40
    assert sum(w in corpus_words for w in words) / len(words) > 0.9
