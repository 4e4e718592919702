"""Settings validation: every bad value is refused with a message naming it; benign forms are coerced."""

import pytest

from playground.config import MAX_PROMPT_CHARS, GenerationSettings, check_prompt
from playground.errors import SettingsError


@pytest.mark.parametrize(
    "values, message",
    [
        ({"temperature": -1}, "temperature=-1.0"),
        ({"temperature": 0}, "temperature=0.0"),
        ({"temperature": 1e9}, "temperature"),
        ({"temperature": float("nan")}, "finite"),
        ({"top_p": 0}, "top_p=0.0"),
        ({"top_p": 5}, "top_p=5.0"),
        ({"top_k": -1}, "top_k=-1"),
        ({"typical_p": 1.5}, "typical_p"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"no_repeat_ngram_size": -2}, "no_repeat_ngram_size"),
        ({"max_new_tokens": 0}, "max_new_tokens=0"),
        ({"max_new_tokens": 10**6}, "max_new_tokens=1000000"),
        ({"max_new_tokens": 2.5}, "whole number"),
        ({"seed": "abc"}, "seed must be a whole number"),
        ({"seed": -1}, "seed=-1"),
        ({"seed": True}, "whole number"),
        ({"do_sample": "yes"}, "do_sample"),
        ({"stop_sequences": [""]}, "stop sequence"),
        ({"stop_sequences": ["x"] * 9}, "At most 8"),
        ({"top_alternatives": 0}, "top_alternatives"),
        ({"temprature": 1.0}, "Unknown setting(s): temprature"),
    ],
)
def test_invalid_settings_are_refused_with_a_clear_message(values, message):
    with pytest.raises(SettingsError, match=None) as info:
        GenerationSettings.from_user(**values)
    assert message in str(info.value)


def test_benign_forms_are_coerced():
    s = GenerationSettings.from_user(max_new_tokens=12.0, seed="7", temperature="0.5", stop_sequences="END\n\\n\\n", top_k=None)
    assert (s.max_new_tokens, s.seed, s.temperature, s.top_k) == (12, 7, 0.5, GenerationSettings().top_k)
    assert s.stop_sequences == ("END", "\n\n")


def test_missing_seed_is_drawn_and_recorded():
    s = GenerationSettings.from_user(seed=None)
    assert s.seed is None
    drawn = s.with_seed()
    assert isinstance(drawn.seed, int) and drawn.with_seed().seed == drawn.seed


def test_max_new_tokens_must_fit_the_context():
    GenerationSettings(max_new_tokens=63).validate_for_context(64)
    with pytest.raises(SettingsError, match="use at most 63"):
        GenerationSettings(max_new_tokens=64).validate_for_context(64)


def test_prompt_checks():
    assert check_prompt(None) == ""
    assert check_prompt("a\ud800b") == "a?b"  # a lone surrogate cannot be tokenized: replaced, not crashed on
    with pytest.raises(SettingsError, match="characters; the limit"):
        check_prompt("x" * (MAX_PROMPT_CHARS + 1))
    with pytest.raises(SettingsError, match="must be text"):
        check_prompt(42)
