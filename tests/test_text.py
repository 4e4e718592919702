"""Text in any script: token bytes, whole characters, streamed text and stop sequences that never split one."""

import pytest

from playground.config import GenerationSettings
from playground.generation import Generation, generate
from playground.text import TokenCodec, complete_prefix_length, escape_bytes, group_units, unit_labels

MIXED = "注意 café 🙂 👨‍👩‍👧"  # 35 bytes: fits the tiny model's 64-token context beside 24 new tokens
FFFD = "\ufffd"


def test_group_units_joins_the_bytes_of_one_character_and_of_one_emoji_sequence():
    pieces = [" \xe6".encode("latin-1"), b"\xb3\xa8", "意".encode(), b" caf", b"\xc3", b"\xa9"]
    units = group_units(pieces)
    assert [(u.start, u.end, u.text) for u in units] == [(0, 2, " 注"), (2, 3, "意"), (3, 4, " caf"), (4, 6, "é")]
    family = "👨‍👩‍👧".encode()
    units = group_units([family[i:i + 3] for i in range(0, len(family), 3)] + [b"!"])
    assert [u.text for u in units] == ["👨‍👩‍👧", "!"]


def test_bytes_that_are_no_character_stay_bytes_and_never_swallow_what_follows():
    units = group_units([b"\xa8", b"ok", "注".encode()[:2]])  # a stray continuation byte, text, a cut character
    assert [(u.text, u.complete) for u in units] == [("\\xa8", False), ("ok", True), ("\\xe6\\xb3", False)]
    assert unit_labels([b"a", "é".encode()[:1], "é".encode()[1:]]) == ["a", "é(1/2)", "é(2/2)"]


@pytest.mark.parametrize("data, whole", [(b"abc", 3), ("注".encode(), 3), ("a注".encode()[:3], 1), ("🙂".encode()[:3], 0),
                                         (b"\xa8", 1), ("é".encode()[:1], 0), (b"", 0)])
def test_complete_prefix_holds_back_only_an_unfinished_character(data, whole):
    assert complete_prefix_length(data) == whole


def test_byte_level_records_reassemble_the_prompt_and_the_output_byte_for_byte(tiny_backend, tiny_source):
    result = generate(tiny_backend, tiny_source, MIXED, GenerationSettings(max_new_tokens=24, seed=3, temperature=1.5, top_k=0))
    assert result.dropped_prompt_tokens == 0
    assert b"".join(t.bytes for t in result.prompt_tokens) == MIXED.encode()
    output = b"".join(t.bytes for t in result.tokens)
    assert output[: len(result.text.encode())] == result.text.encode() or FFFD not in result.text
    assert escape_bytes(output).startswith(result.text)
    for record in result.prompt_tokens + result.tokens:
        assert FFFD not in record.text and all(FFFD not in alt.text for alt in record.top)
    units = result.units_json()
    assert "".join(u["text"] for u in units if u["is_prompt"]) == MIXED
    assert [u["text"] for u in units[:2]] == ["注", "意"] and "👨‍👩‍👧" in [u["text"] for u in units]
    assert all(u["joint_prob"] is None or 0 < u["joint_prob"] <= 1 for u in units)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_random_bytes_never_show_a_replacement_character(tiny_backend, tiny_source, seed):
    """At temperature 3 over a byte-level vocabulary the model emits stray and cut UTF-8 sequences."""
    from playground.ui.render import surprisal_figure, token_view_html

    settings = GenerationSettings(max_new_tokens=48, seed=seed, temperature=3.0, top_k=0)
    run = Generation(tiny_backend, tiny_source, "床前明月光，", settings)
    streamed = [run.current_text() for _ in run]
    result = run.result
    for text in streamed:
        assert FFFD not in text and result.text.startswith(text)
        text.encode("utf-8")  # a real str: no lone surrogates
    assert FFFD not in result.text and FFFD not in token_view_html(result)
    assert all(FFFD not in (label or "") for label in surprisal_figure(result).data[1].text)


def test_streamed_text_grows_by_whole_characters_only(tiny_backend, tiny_source):
    settings = GenerationSettings(max_new_tokens=40, seed=11, temperature=1.3, top_k=0)
    run = Generation(tiny_backend, tiny_source, "月光", settings)
    seen = []
    for _ in run:
        seen.append(run.current_text())
    for earlier, later in zip(seen, seen[1:]):
        assert later.startswith(earlier)
    assert run.result.text.startswith(seen[-1])


def test_a_stop_sequence_of_several_byte_tokens_cuts_at_the_character(tiny_backend, tiny_source):
    """Find a sampled run whose output spells a multi-byte character, then stop on that character."""
    for seed in range(40):
        settings = GenerationSettings(max_new_tokens=48, seed=seed, temperature=2.0, top_k=0)
        free = generate(tiny_backend, tiny_source, "café, naïve, 注意", settings)
        wide = [u for u, records in free.units() if len(records) > 1 and u.complete and not records[0].is_prompt]
        if wide:
            break
    else:
        pytest.fail("no sampled run spelled a multi-byte character")
    stop = wide[0].text.strip()
    cut = generate(tiny_backend, tiny_source, "café, naïve, 注意",
                   GenerationSettings(max_new_tokens=48, seed=seed, temperature=2.0, top_k=0, stop_sequences=(stop,)))
    assert cut.finish_reason == "stop_sequence"
    assert cut.text == free.text[: free.text.find(stop)] and FFFD not in cut.text


def test_branch_at_the_second_byte_of_a_character_works_and_says_what_it_did(tiny_source, tmp_path):
    from playground.service import Playground

    playground = Playground(tiny_source, device="cpu", exports_root=tmp_path)
    for seed in range(40):
        parent = generate(playground.backend(), tiny_source, "注意", GenerationSettings(max_new_tokens=20, seed=seed, temperature=2.0, top_k=0))
        found = [(u, records) for u, records in parent.units() if len(records) > 1 and not records[0].is_prompt]
        if found:
            break
    else:
        pytest.fail("no sampled run spelled a multi-byte character")
    unit, records = found[0]
    index = parent.tokens.index(records[1])
    alternative = next(alt for alt in records[1].top if alt.token_id != records[1].token_id)
    run = playground.branch(parent, index, alternative.token_id)
    for _ in playground.stream(run):
        pass
    result = run.result
    assert any(f"token 2 of the {unit.size}" in notice for notice in result.notices), result.notices
    assert FFFD not in result.prompt + result.text
    everything = b"".join(t.bytes for t in result.prompt_tokens + result.tokens)
    assert escape_bytes(everything[: complete_prefix_length(everything)]) == result.prompt + result.text
    # The completion hint for an alternative that is only part of a character names a whole one (or nothing).
    hint = playground.completion_of(parent, index, alternative.token_id)
    assert hint is None or (FFFD not in hint and len(hint) >= 1)


def test_wordpiece_text_has_no_spaces_between_chinese_characters(tmp_path):
    from transformers import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "床", "前", "明", "月", "光", "，", "。", "hello", "world",
             "wor", "##ld", ",", ".", "gpt", "##2"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab), encoding="utf-8")
    codec = TokenCodec(BertTokenizer(str(tmp_path / "vocab.txt")))
    ids = codec.encode("床前明月光，hello world, gpt2。🙂")
    assert ids[0] == codec.bos_id and codec.label(ids[0]) == "[CLS]"
    assert codec.decode(ids) == "床前明月光，hello world, gpt2。[UNK]"
    assert codec.eos_ids == {vocab.index("[SEP]")} and codec.piece(vocab.index("[SEP]")) == b""
    assert codec.encode("[CLS]明月")[:2] == [vocab.index("[CLS]"), vocab.index("明")]  # typed [CLS] is not doubled
