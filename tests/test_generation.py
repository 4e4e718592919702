"""The decoding loop on a real tiny GPT-2: determinism, each sampling setting's effect, records vs a forward pass."""

import math
import threading

import pytest
import regex
import torch

from playground.config import GenerationSettings
from playground.generation import Generation, generate
from playground.text import complete_prefix_length, escape_bytes

PROMPT = "The value of the attribute is"


def ids_of(result):
    return [t.token_id for t in result.tokens]


def run(backend, source, prompt=PROMPT, **settings):
    settings.setdefault("max_new_tokens", 24)
    return generate(backend, source, prompt, GenerationSettings(**settings))


def test_same_seed_same_output_and_different_seeds_differ(tiny_backend, tiny_source):
    a = run(tiny_backend, tiny_source, seed=11)
    b = run(tiny_backend, tiny_source, seed=11)
    c = run(tiny_backend, tiny_source, seed=12)
    assert ids_of(a) == ids_of(b) and a.text == b.text
    assert [t.prob for t in a.tokens] == [t.prob for t in b.tokens]
    assert ids_of(a) != ids_of(c)


def test_top_k_1_equals_greedy(tiny_backend, tiny_source):
    greedy = run(tiny_backend, tiny_source, do_sample=False)
    assert ids_of(run(tiny_backend, tiny_source, do_sample=True, top_k=1, seed=5)) == ids_of(greedy)
    assert all(t.rank == 1 for t in greedy.tokens)


def test_temperature_towards_zero_approaches_greedy(tiny_backend, tiny_source):
    greedy = ids_of(run(tiny_backend, tiny_source, do_sample=False))
    cold = [ids_of(run(tiny_backend, tiny_source, temperature=0.01, top_k=0, seed=s)) for s in range(3)]
    hot = [ids_of(run(tiny_backend, tiny_source, temperature=2.0, top_k=0, seed=s)) for s in range(3)]
    assert all(c == greedy for c in cold)
    assert sum(h == greedy for h in hot) == 0


@pytest.mark.parametrize("top_p", [0.3, 0.6, 0.9])
def test_top_p_samples_only_from_the_nucleus(tiny_backend, tiny_source, top_p):
    result = run(tiny_backend, tiny_source, top_p=top_p, top_k=0, seed=3, top_alternatives=100, max_new_tokens=40)
    for t in result.tokens:
        # The tokens ranked above the chosen one hold less than top_p of the mass, or it would be cut.
        mass_above = sum(alt.prob for alt in t.top[: t.rank - 1])
        assert mass_above < top_p + 1e-6
        assert t.prob >= t.raw_prob - 1e-6  # renormalised over the nucleus


def test_top_k_limits_the_rank(tiny_backend, tiny_source):
    result = run(tiny_backend, tiny_source, top_k=3, seed=9, max_new_tokens=40)
    assert all(t.rank <= 3 for t in result.tokens)


def test_typical_p_changes_the_distribution(tiny_backend, tiny_source):
    plain = run(tiny_backend, tiny_source, top_k=0, seed=4)
    typical = run(tiny_backend, tiny_source, top_k=0, typical_p=0.3, seed=4)
    assert all(abs(t.prob - t.raw_prob) < 1e-5 for t in plain.tokens)
    assert any(t.prob > t.raw_prob + 1e-3 for t in typical.tokens)


def test_repetition_penalty_reduces_repeats(tiny_backend, tiny_source):
    plain = ids_of(run(tiny_backend, tiny_source, do_sample=False, max_new_tokens=40))
    penalised = ids_of(run(tiny_backend, tiny_source, do_sample=False, repetition_penalty=5.0, max_new_tokens=40))
    assert len(set(penalised)) > len(set(plain))


def test_no_repeat_ngram_size_forbids_repeated_bigrams(tiny_backend, tiny_source):
    result = run(tiny_backend, tiny_source, do_sample=False, no_repeat_ngram_size=2, max_new_tokens=40)
    seq = [t.token_id for t in result.prompt_tokens] + ids_of(result)
    bigrams = list(zip(seq, seq[1:]))
    assert len(bigrams) == len(set(bigrams))


def test_stop_sequence_ends_the_run_and_is_cut_from_the_text(tiny_backend, tiny_source):
    free = run(tiny_backend, tiny_source, do_sample=False, max_new_tokens=30)
    stop = next(t.text.strip() for t in free.tokens[8:] if t.text.strip())  # text the model will produce
    result = run(tiny_backend, tiny_source, do_sample=False, max_new_tokens=30, stop_sequences=(stop,))
    assert result.finish_reason == "stop_sequence"
    assert result.text == free.text[: free.text.find(stop)]
    assert len(result.tokens) < len(free.tokens)


def test_records_match_a_direct_forward_pass(tiny_backend, tiny_source):
    result = run(tiny_backend, tiny_source, seed=2, max_new_tokens=16, temperature=0.8)
    seq = [t.token_id for t in result.prompt_tokens] + ids_of(result)
    with torch.inference_mode():
        logits = tiny_backend.model(torch.tensor([seq])).logits[0].float()  # (T, V)
    logprobs = torch.log_softmax(logits, -1)
    records = result.prompt_tokens + result.tokens
    assert records[0].raw_prob is None
    for pos in range(1, len(seq)):
        rec, row = records[pos], logprobs[pos - 1]
        assert rec.position == pos and rec.token_id == seq[pos]
        assert math.isclose(rec.raw_prob, row[seq[pos]].exp().item(), rel_tol=1e-4, abs_tol=1e-7)
        assert rec.rank == int((row > row[seq[pos]]).sum()) + 1
        entropy_bits = -(row.exp() * row).sum().item() / math.log(2)
        assert math.isclose(rec.entropy_bits, entropy_bits, rel_tol=1e-4)
        assert [alt.token_id for alt in rec.top] == row.topk(10).indices.tolist()
        assert rec.text == tiny_source.tokenizer.decode([rec.token_id])
    ppl = math.exp(-sum(math.log(r.raw_prob) for r in result.prompt_tokens[1:]) / (len(result.prompt_tokens) - 1))
    assert math.isclose(result.prompt_perplexity, ppl, rel_tol=1e-9)
    metrics = result.metrics()
    assert metrics["ttft_ms"] > 0 and metrics["decode_tokens_per_s"] > 0 and metrics["new_token_count"] == 16


def test_overlong_prompt_keeps_the_last_tokens_and_says_so(tiny_backend, tiny_source):
    prompt = "The attribute of the object is the value. " * 40
    result = run(tiny_backend, tiny_source, prompt=prompt, max_new_tokens=10, seed=1)
    context = tiny_backend.info.context_length
    assert len(result.prompt_tokens) == context - 10
    assert result.dropped_prompt_tokens > 0 and "dropped" in result.notices[0]
    assert len(result.tokens) == 10


def test_empty_prompt_starts_from_end_of_text(tiny_backend, tiny_source):
    result = run(tiny_backend, tiny_source, prompt="", max_new_tokens=5, seed=1)
    assert [t.token_id for t in result.prompt_tokens] == [tiny_source.tokenizer.eos_token_id]
    assert "Empty prompt" in result.notices[0] and len(result.tokens) == 5


def test_stop_event_ends_the_run_and_keeps_what_was_produced(tiny_backend, tiny_source):
    stop = threading.Event()
    gen = Generation(tiny_backend, tiny_source, PROMPT, GenerationSettings(max_new_tokens=40, seed=1), stop_event=stop)
    for i, _ in enumerate(gen):
        if i == 4:
            stop.set()
    assert gen.result.finish_reason == "stopped"
    assert len(gen.result.tokens) == 5
    assert gen.result.text == tiny_source.tokenizer.decode(ids_of(gen.result))


def test_html_in_the_prompt_is_kept_literally(tiny_backend, tiny_source):
    from playground.ui.render import token_view_html

    result = run(tiny_backend, tiny_source, prompt='<img src=x onerror="alert(1)"><script>x</script>', max_new_tokens=4, seed=1)
    html = token_view_html(result)
    assert "<img" not in html and "<script" not in html
    assert "&lt;" in html


def test_stop_ends_only_the_callers_own_run(tiny_source):
    from playground.service import Playground

    playground = Playground(tiny_source, device="cpu")
    mine_run = playground.start(PROMPT, GenerationSettings(max_new_tokens=30, seed=1), session="alice")
    mine = iter(mine_run)
    theirs_run = playground.start(PROMPT, GenerationSettings(max_new_tokens=30, seed=1), session="bob")
    theirs = iter(theirs_run)
    for _ in range(3):
        next(mine), next(theirs)
    assert playground.stop("alice")
    rest_mine, rest_theirs = list(mine), list(theirs)
    # Both runs step in one batch: a token made for Alice while Bob's consumer took the step still reaches her.
    assert len(rest_mine) <= 1 and len(mine_run.result.tokens) == 3 + len(rest_mine)
    assert mine_run.result.finish_reason == "stopped"
    assert len(rest_theirs) == 27 and theirs_run.result.finish_reason == "length"
    assert not playground.stop("nobody")


def test_a_backend_being_built_does_not_block_others(tiny_source, tmp_path):
    """An ONNX export can take minutes: runs on a backend that is already built must go on meanwhile."""
    from playground.service import Playground

    playground = Playground(tiny_source, device="cpu", exports_root=tmp_path)
    torch_backend = playground.backend("torch")
    building = threading.Thread(target=playground.backend, args=("onnx", "int8"))
    building.start()
    while building.is_alive() and (tiny_source.name, "onnx", "int8") not in playground._build_locks:
        pass
    assert playground.backend("torch") is torch_backend  # answered while the export runs
    assert building.is_alive()
    building.join()
    assert playground.backend("onnx", "int8").info.variant == "int8"


def greedy_completion(backend, codec, ids: list[int], max_tokens: int = 4) -> str | None:
    """A bare greedy loop on the backend (prefill, argmax, step) until the bytes are whole characters: the reference."""
    data, start = b"".join(codec.pieces(ids)), complete_prefix_length(b"".join(codec.pieces(ids[:-1])))
    logits, cache = backend.prefill(ids)
    logits = logits[-1]  # (V,)
    for _ in range(max_tokens):
        if complete_prefix_length(data) == len(data):
            break
        token_id = int(logits.argmax())
        data, ids = data + codec.piece(token_id, ids[-1]), ids + [token_id]
        logits, cache = backend.step(token_id, cache)
    if complete_prefix_length(data) < len(data):
        return None
    text = escape_bytes(data[start:])
    return regex.match(r"\X", text).group() if text else None


def test_the_completion_hint_is_the_greedy_continuation_until_the_character_is_whole(tiny_backend, tiny_source):
    from playground.service import Playground

    playground = Playground(tiny_source, device="cpu")
    for seed in range(40):
        parent = generate(playground.backend(), tiny_source, "注意", GenerationSettings(max_new_tokens=20, seed=seed, temperature=2.0, top_k=0))
        found = [(unit, records) for unit, records in parent.units() if len(records) > 1 and not records[0].is_prompt]
        if found:
            break
    else:
        pytest.fail("no sampled run spelled a multi-byte character")
    unit, records = found[0]
    last = parent.tokens.index(records[-1])
    # The token that made the character whole, put back: the character itself, without a step.
    assert playground.completion_of(parent, last, records[-1].token_id) == regex.match(r"\X", unit.text).group()
    kept = [t.token_id for t in parent.prompt_tokens + parent.tokens]
    for record in records:
        index = parent.tokens.index(record)
        for alternative in record.top:
            expected = greedy_completion(tiny_backend, tiny_source.codec, kept[:record.position] + [alternative.token_id])
            assert playground.completion_of(parent, index, alternative.token_id) == expected
