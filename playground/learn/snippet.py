"""The code behind a run: a `transformers` script that draws the run's own tokens, and the same request to `/v1`
(curl and the `openai` SDK).

How the script reproduces the playground's draws (tests/test_learn_snippet.py runs it and compares the tokens):
- Sample i of a batch samples with its own generator seeded seed + i (generation.sample_seed). `model.generate`
  samples with torch's global generator, so the script seeds it (`torch.manual_seed(seed + i)`) and calls generate
  once per sample. `num_return_sequences=N` in one call would draw all N rows from one generator: other texts.
- The playground applies transformers' own processors in generate's order (generation.build_logits_processors)
  and draws as `torch.multinomial` does (sampling.draw), so the same seed gives the same token.
- Every setting is written out, `top_k` too: a model's generation config defaults it to 50, the playground's 0 is off.
- The prompt goes in as the token ids the run saw (a Chinese BertTokenizer's [CLS] first, a long prompt's kept
  tail, a branch's kept and swapped tokens), written as the tokenizer call when that gives those ids.
- End of text is the token ids the playground stops at (uer's checkpoints name no end-of-text id in their config).

What it cannot promise is said in `notes`: another backend's numbers (ONNX int8/int4, fp16, a serving engine) differ
from PyTorch fp32's by a little, enough to flip a near-tie; a stop sequence is kept in transformers' output; a run made
with an experiment's intervention (heads knocked out, steering) ran a changed model, which plain transformers is not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..locales import text
from ..records import GenerationResult
from ..text import TokenCodec

DEFAULT_BASE_URL = "http://127.0.0.1:7860"


@dataclass(frozen=True)
class RunCode:
    """The code that reproduces a run (or a batch of samples), and what to know about it (locale keys with params)."""

    transformers: str
    curl: str
    openai: str
    notes: tuple[tuple[str, dict], ...]


def _py(value) -> str:
    """A Python literal of `value` (strings with their non-ASCII characters as they are)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def prompt_expression(result: GenerationResult, codec: TokenCodec) -> tuple[str, list[int]]:
    """The Python expression (a list of ints) for the prompt ids the run saw, and those ids: the tokenizer's call when
    it gives exactly them, else the ids written out."""
    ids = [record.token_id for record in result.prompt_tokens]
    plain = codec.tokenizer(result.prompt, add_special_tokens=False)["input_ids"] if result.prompt else []
    if plain and plain == ids:
        return "tokenizer(prompt, add_special_tokens=False).input_ids", ids
    if plain and codec.bos_id is not None and [codec.bos_id] + plain == ids:
        return "[tokenizer.cls_token_id] + tokenizer(prompt, add_special_tokens=False).input_ids", ids
    return repr(ids), ids


def generate_arguments(result: GenerationResult, codec: TokenCodec, count: int = 1) -> list[tuple[str, str]]:
    """`model.generate`'s keyword arguments for the run's settings, as (name, Python literal) pairs (`count`: the
    sequences a beam search returns)."""
    s = result.settings
    arguments = [("max_new_tokens", _py(s.max_new_tokens)), ("do_sample", _py(s.do_sample))]
    if s.do_sample:
        arguments += [("temperature", _py(s.temperature)), ("top_k", _py(s.top_k)), ("top_p", _py(s.top_p))]
        if s.typical_p < 1.0:
            arguments.append(("typical_p", _py(s.typical_p)))
    if s.repetition_penalty != 1.0:
        arguments.append(("repetition_penalty", _py(s.repetition_penalty)))
    if s.no_repeat_ngram_size > 0:
        arguments.append(("no_repeat_ngram_size", _py(s.no_repeat_ngram_size)))
    if s.stop_sequences:
        arguments += [("stop_strings", _py(list(s.stop_sequences))), ("tokenizer", "tokenizer")]
    if s.num_beams > 1:  # one call returns the best beams (the run's samples)
        arguments += [("num_beams", _py(s.num_beams)), ("num_return_sequences", _py(count)),
                      ("length_penalty", _py(s.length_penalty)), ("early_stopping", _py(s.early_stopping))]
    if s.penalty_alpha > 0:  # transformers keeps contrastive search outside its core since 4.56: the community's code
        arguments += [("penalty_alpha", _py(s.penalty_alpha)), ("top_k", _py(s.top_k)),
                      ("custom_generate", _py("transformers-community/contrastive-search")), ("trust_remote_code", "True")]
    eos = sorted(codec.eos_ids)
    if s.min_new_tokens > 0 and eos and not s.ignore_eos:
        arguments.append(("min_new_tokens", _py(s.min_new_tokens)))
    if s.ignore_eos and eos:
        arguments.append(("suppress_tokens", _py(eos)))  # end of text never chosen: the run goes on to max_new_tokens
    arguments.append(("eos_token_id", _py(eos[0] if len(eos) == 1 else eos) if eos else "None"))
    pad = codec.tokenizer.pad_token_id if codec.tokenizer.pad_token_id is not None else (eos[0] if eos else 0)
    arguments.append(("pad_token_id", _py(pad)))
    return arguments


def transformers_code(results: list[GenerationResult], model_location: str, codec: TokenCodec) -> str:
    """A script that draws `results` (one run, or the samples of one batch in order) with `transformers`."""
    first = results[0]
    s = first.settings
    expression, ids = prompt_expression(first, codec)
    call = ",\n        ".join(f"{name}={value}" for name, value in generate_arguments(first, codec, len(results)))
    header = [
        "# pip install torch transformers",
        "import torch",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f"model_path = {_py(model_location)}",
        "tokenizer = AutoTokenizer.from_pretrained(model_path)",
        "model = AutoModelForCausalLM.from_pretrained(model_path).eval()",
        "",
        f"prompt = {_py(first.prompt)}",
        f"input_ids = torch.tensor([{expression}])  # {len(ids)} tokens",
        "",
        "samples = []",
    ]
    if s.num_beams > 1 and s.do_sample:
        loop = [f"for seed in [{s.seed}]:  # beam sampling: one call draws every sequence, best first",
                "    torch.manual_seed(seed)"]
    elif s.num_beams > 1:
        loop = ["for _ in range(1):  # beam search: one call returns every sequence, best first"]
    elif s.do_sample:
        count = len(results)
        if count == 1:
            loop = [f"for seed in [{s.seed}]:"]
        else:
            loop = [f"# sample i draws with its own seed, {s.seed} + i: one generate call per sample",
                    f"for seed in range({s.seed}, {s.seed + count}):"]
        loop.append("    torch.manual_seed(seed)")
    else:
        loop = ["for _ in range(1):  # greedy: no seed, every call gives the same tokens"]
    body = [
        "    output = model.generate(",
        "        input_ids,",
        "        attention_mask=torch.ones_like(input_ids),",
        f"        {call},",
        "    )",
        "    new_ids = output[0, input_ids.shape[1]:].tolist()",
        "    samples.append(new_ids)",
        "    print(repr(tokenizer.decode(new_ids)))",
    ]
    if s.num_beams > 1:  # every returned beam, up to its end of text (transformers pads the shorter ones after it)
        ends = sorted(codec.eos_ids) if not s.ignore_eos else []
        body[-3:] = ["    for row in output:",
                     "        new_ids = row[input_ids.shape[1]:].tolist()",
                     *([f"        ends = [i for i, token in enumerate(new_ids) if token in {_py(ends)}]",
                        "        new_ids = new_ids[: ends[0] + 1] if ends else new_ids"] if ends else []),
                     "        samples.append(new_ids)",
                     "        print(repr(tokenizer.decode(new_ids)))"]
    return "\n".join(header + loop + body) + "\n"


def request_body(results: list[GenerationResult], model_name: str) -> dict:
    """The `/v1/completions` body for the run: OpenAI's fields, the playground's extras (top_k, ...) beside them."""
    first = results[0]
    s = first.settings
    body: dict = {"model": model_name, "prompt": first.prompt, "max_tokens": s.max_new_tokens}
    if s.do_sample:
        body |= {"temperature": s.temperature, "top_p": s.top_p, "top_k": s.top_k, "seed": s.seed}
        if s.typical_p < 1.0:
            body["typical_p"] = s.typical_p
    else:
        body["temperature"] = 0  # OpenAI's greedy
    if len(results) > 1:
        body["n"] = len(results)
    if s.repetition_penalty != 1.0:
        body["repetition_penalty"] = s.repetition_penalty
    if s.no_repeat_ngram_size > 0:
        body["no_repeat_ngram_size"] = s.no_repeat_ngram_size
    if s.stop_sequences:
        body["stop"] = list(s.stop_sequences)
    if s.min_new_tokens > 0:
        body["min_tokens"] = s.min_new_tokens  # vLLM's name
    if s.ignore_eos:
        body["ignore_eos"] = True
    if first.info.backend != "torch":
        body |= {"backend": first.info.backend, "variant": first.info.variant}
    return body


def curl_code(body: dict, base_url: str = DEFAULT_BASE_URL) -> str:
    """The request as a curl command (the JSON between single quotes, a quote in it escaped for the shell)."""
    data = json.dumps(body, ensure_ascii=False, indent=2).replace("'", "'\\''")
    return ("# with --auth, add: -H 'Authorization: Bearer USER:PASSWORD'\n"
            f"curl {base_url}/v1/completions \\\n  -H 'Content-Type: application/json' \\\n  -d '{data}'\n")


OPENAI_FIELDS = ("model", "prompt", "max_tokens", "temperature", "top_p", "seed", "n", "stop")


def openai_code(body: dict, base_url: str = DEFAULT_BASE_URL) -> str:
    """The request with the `openai` SDK: its own fields as arguments, the playground's extras in `extra_body`."""
    arguments = [f"    {name}={_py(value)}," for name, value in body.items() if name in OPENAI_FIELDS]
    extras = {name: value for name, value in body.items() if name not in OPENAI_FIELDS}
    if extras:
        arguments.append(f"    extra_body={_py(extras)},")
    return "\n".join([
        "# pip install openai",
        "from openai import OpenAI",
        "",
        f'client = OpenAI(base_url="{base_url}/v1", api_key="USER:PASSWORD")  # any key without --auth',
        "completion = client.completions.create(",
        *arguments,
        ")",
        "for choice in completion.choices:",
        "    print(repr(choice.text))",
    ]) + "\n"


def made_step_by_step(notice: str) -> bool:
    """Whether a run's notice says it was made one step at a time (steps.py): by its key, or, in a run read back from
    the history (notices stored as their English text), by that text's first words."""
    return getattr(notice, "key", None) == "notice.step_by_step" or str(notice).startswith(
        text("notice.step_by_step", "en", steps=0, by_hand=0).split(":")[0])


def run_code(results: list[GenerationResult], model_location: str, codec: TokenCodec,
             base_url: str = DEFAULT_BASE_URL) -> RunCode:
    """Everything the code view shows for `results` (one run, or the samples of one batch, sample 0 first)."""
    first = results[0]
    info, s = first.info, first.settings
    notes: list[tuple[str, dict]] = []
    if info.backend == "remote":
        notes.append(("code.note_remote", {"engine": info.variant}))
    elif info.backend != "torch" or info.variant != "fp32" or not info.provider.startswith("cpu"):
        notes.append(("code.note_backend", {"backend": f"{info.backend} {info.variant} · {info.provider}"}))
    if first.intervention:
        notes.append(("code.note_intervention", {}))
    if s.stop_sequences:
        notes.append(("code.note_stop", {}))
    if first.parent_run_id is not None:
        notes.append(("code.note_branch", {"run_id": first.parent_run_id}))
    if any(made_step_by_step(notice) for notice in first.notices):
        notes.append(("code.note_steps", {}))
    if s.num_beams > 1:
        notes.append(("code.note_beams", {}))
    if first.group_id is not None and len(results) == 1 and s.num_beams == 1:
        notes.append(("code.note_one_sample", {"index": first.sample_index or 0, "seed": s.seed}))
    body = request_body(results, info.model)
    if first.parent_run_id is not None or first.dropped_prompt_tokens:
        body["prompt"] = [record.token_id for record in first.prompt_tokens]  # the ids the run saw: /v1 takes ids too
    return RunCode(transformers_code(results, model_location, codec), curl_code(body, base_url), openai_code(body, base_url),
                   tuple(notes))
