"""The Generate tab's own views on real tiny models: which example prompt a page opens with, and how a branch is shown."""

import pytest

from playground.config import GenerationSettings
from playground.locales import EN, ZH_CN
from playground.models import resolve_model
from playground.service import Playground
from playground.text import escape_bytes
from playground.ui.generate_tab import branch_view, example_prompt, model_language


@pytest.fixture(scope="module")
def zh_source(tiny_zh_bin_dir):
    return resolve_model(str(tiny_zh_bin_dir))


def test_the_models_language_is_read_from_its_vocabulary(tiny_source, zh_source):
    assert model_language(tiny_source.codec) == "en"  # byte-level BPE trained on English
    assert model_language(zh_source.codec) == "zh-CN"  # uer's layout: a BertTokenizer of Chinese characters


def test_the_example_prompt_is_in_the_models_language_on_either_page(tiny_source, zh_source):
    english, chinese = EN["generate.example_prompt"], ZH_CN["generate.example_prompt"]
    assert example_prompt(tiny_source.codec, "en") == english
    assert example_prompt(tiny_source.codec, "zh-CN") == english  # a Chinese example would be byte noise to it
    assert example_prompt(zh_source.codec, "en") == chinese  # an English prompt is [UNK]s and word pieces to it
    assert example_prompt(zh_source.codec, "zh-CN") == chinese
    assert zh_source.codec.unk_id not in zh_source.codec.encode(chinese)  # every character is in its vocabulary


def run_to_end(playground, run):
    for _ in playground.stream(run):
        pass
    return run.result


@pytest.mark.parametrize("which, prompt", [("en", "The value of"), ("zh", "春风又绿江南岸"), ("zh", "Hello 春风")])
def test_a_branch_is_shown_whole(tiny_source, zh_source, which, prompt):
    """Prompt box: the prompt it grew from; output box: the kept tokens, the swapped-in token, then the continuation."""
    playground = Playground(tiny_source if which == "en" else zh_source, device="cpu")
    parent = run_to_end(playground, playground.start(prompt, GenerationSettings(max_new_tokens=8, seed=3)))
    index = 3
    alternative = next(a for a in parent.tokens[index].top if a.token_id != parent.tokens[index].token_id)
    run = playground.branch(parent, index, alternative.token_id)
    prompt_box, before = branch_view(parent, run.result, run.current_text())
    kept = escape_bytes(b"".join(r.bytes for r in parent.tokens[:index]))
    assert prompt_box == prompt and before.startswith(kept)  # shown as soon as the branch starts
    branch = run_to_end(playground, run)
    prompt_box, output = branch_view(parent, branch, branch.text)
    spelled = b"".join(r.bytes for r in parent.tokens[:index] + branch.prompt_tokens[-1:] + branch.tokens)
    assert prompt_box == prompt and output == escape_bytes(spelled) and output.endswith(branch.text)
    assert branch.prompt_tokens[-1].token_id == alternative.token_id and escape_bytes(alternative.bytes) in output
