"""The code behind a run (playground.learn.snippet): the transformers script, run in a fresh Python, draws the run's
own tokens, greedy and seeded, one sample and several, beam search and beam sampling, on an English BPE model and a
Chinese BertTokenizer one."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from playground.config import GenerationSettings
from playground.generation import generate_samples
from playground.learn.snippet import curl_code, openai_code, request_body, run_code

RUNS = [  # (model, prompt, settings, samples)
    ("en", "The cat sat on the", dict(do_sample=False, max_new_tokens=12), 1),
    ("en", "The cat sat on the", dict(temperature=0.9, top_k=0, top_p=0.9, seed=7, max_new_tokens=16), 1),
    ("en", "Once upon a time", dict(temperature=1.2, top_k=20, seed=100, max_new_tokens=16, repetition_penalty=1.3), 3),
    ("en", " ".join(["a long prompt"] * 30), dict(temperature=1.0, top_k=0, seed=3, max_new_tokens=40), 2),  # tokens dropped
    ("zh", "今天天气", dict(do_sample=False, max_new_tokens=10, no_repeat_ngram_size=2), 1),
    ("zh", "人生", dict(temperature=0.8, top_k=0, top_p=0.95, typical_p=0.9, seed=5, max_new_tokens=12), 3),
    # The length controls: transformers' min_new_tokens, and suppress_tokens for ignore_eos.
    ("zh", "今天", dict(top_k=0, seed=3, max_new_tokens=30, min_new_tokens=25), 2),
    ("zh", "今天", dict(do_sample=False, max_new_tokens=20, ignore_eos=True), 1),
    ("en", "The", dict(top_k=0, seed=14, max_new_tokens=16, ignore_eos=True), 1),
    # Beam search: one generate call returns the best beams; the Chinese model ends beams at [SEP] at different lengths
    # (transformers pads the shorter ones), and beam sampling draws with the run's seed, warpers on or off.
    ("zh", "今天天气", dict(do_sample=False, num_beams=4, max_new_tokens=16, length_penalty=0.5, no_repeat_ngram_size=2), 4),
    ("zh", "人生", dict(do_sample=False, num_beams=3, max_new_tokens=12, early_stopping=True, repetition_penalty=1.2), 2),
    ("en", "It is", dict(num_beams=3, top_k=0, seed=7, max_new_tokens=8), 2),
    ("zh", "我们", dict(num_beams=4, temperature=1.3, top_k=30, seed=11, max_new_tokens=12), 3),
]


@pytest.fixture(scope="module")
def zh_source(tiny_zh_bin_dir):
    from playground.models import resolve_model

    return resolve_model(str(tiny_zh_bin_dir))


def test_the_transformers_script_draws_the_runs_tokens(tiny_source, zh_source):
    from playground.backends.torch import TorchBackend

    sources = {"en": tiny_source, "zh": zh_source}
    backends = {lang: TorchBackend(source, device="cpu") for lang, source in sources.items()}
    scripts, wanted = [], []
    for lang, prompt, settings, samples in RUNS:
        results = generate_samples(backends[lang], sources[lang], prompt, GenerationSettings.from_user(**settings), samples)
        scripts.append(run_code(results, str(sources[lang].location), sources[lang].codec).transformers)
        wanted.append([[record.token_id for record in result.tokens] for result in results])
    # One Python for all scripts (importing transformers is most of a script's time); each runs in its own namespace.
    runner = "import json, sys\nfor script in json.load(sys.stdin):\n    space = {}\n    exec(script, space)\n" \
             "    print('IDS', json.dumps(space['samples']))\n"
    done = subprocess.run([sys.executable, "-c", runner], input=json.dumps(scripts), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = [json.loads(line[4:]) for line in done.stdout.splitlines() if line.startswith("IDS ")]
    assert got == wanted


def test_the_script_says_do_sample_and_every_warper(tiny_source):
    from playground.backends.torch import TorchBackend

    backend = TorchBackend(tiny_source, device="cpu")
    results = generate_samples(backend, tiny_source, "It's \"quoted\"", GenerationSettings.from_user(
        temperature=0.7, top_k=0, seed=41, max_new_tokens=3, stop_sequences="zz"), 2)
    code = run_code(results, "models/tiny", tiny_source.codec)
    assert "do_sample=True" in code.transformers and "top_k=0" in code.transformers  # the config's 50 would win otherwise
    assert "for seed in range(41, 43):" in code.transformers
    compile(code.transformers, "<snippet>", "exec")
    compile(code.openai, "<snippet>", "exec")
    assert ("code.note_stop", {}) in code.notes
    results[0].intervention = {"ablate_heads": [[0, 1]]}  # an experiment's run: a model plain transformers does not run
    assert ("code.note_intervention", {}) in run_code(results[:1], "models/tiny", tiny_source.codec).notes
    body = request_body(results, "tiny")
    assert body | {"seed": 41, "n": 2, "top_k": 0, "stop": ["zz"]} == body
    # The JSON in the curl command is the body, whatever quotes the prompt holds.
    quoted = curl_code(body).split("-d '", 1)[1].rsplit("'", 1)[0].replace("'\\''", "'")
    assert json.loads(quoted) == body
    assert "extra_body={'top_k': 0}" in openai_code(body)
