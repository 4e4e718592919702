"""Chinese GPT-2 checkpoints (uer layout: BertTokenizer vocab.txt, pytorch_model.bin only) load, run, export; bad ones are refused."""

import json
import shutil

import pytest
import torch

from playground.backends.torch import TorchBackend
from playground.errors import ModelLoadError
from playground.models import list_local_models, load_torch_model, resolve_choice, resolve_model
from playground.training.corpus_zh import clean_entry, decode_fortune_bytes, load_zh_texts

POEM = "床前明月光，疑是地上霜。"


def test_uer_layout_folder_loads_through_the_normal_path(tiny_zh_bin_dir):
    from transformers import AutoTokenizer

    source = resolve_model(str(tiny_zh_bin_dir))
    assert source.name == "tiny-zh-gpt2" and source.notice is None
    assert type(AutoTokenizer.from_pretrained(tiny_zh_bin_dir)).__name__ in {"BertTokenizer", "BertTokenizerFast"}
    assert type(source.tokenizer).__name__ == "BertTokenizerFast"
    backend = TorchBackend(source, device="cpu")
    assert backend.model.__class__.__name__ == "GPT2LMHeadModel" and backend.info.context_length == 64

    ids = source.tokenizer(POEM)["input_ids"]
    assert ids[0] == source.tokenizer.cls_token_id and ids[-1] == source.tokenizer.sep_token_id
    assert len(ids) == len(POEM) + 2  # one token per character, punctuation included
    logits, cache = backend.prefill(ids[:-1])
    assert logits.shape == (len(ids) - 1, len(source.tokenizer))
    step_logits, _ = backend.step(ids[-1], cache)
    with torch.inference_mode():
        full = backend.model(torch.tensor([ids])).logits[0, -1]
    torch.testing.assert_close(step_logits, full, atol=1e-4, rtol=1e-4)


def test_bin_weights_are_the_same_tensors_as_the_safetensors_ones(tiny_zh_bin_dir, tiny_zh_demo_dir):
    from_bin = load_torch_model(resolve_model(str(tiny_zh_bin_dir)))
    from_safetensors = load_torch_model(resolve_model(str(tiny_zh_demo_dir)))
    ids = torch.tensor([resolve_model(str(tiny_zh_bin_dir)).tokenizer(POEM)["input_ids"]])
    with torch.inference_mode():
        assert torch.equal(from_bin(ids).logits, from_safetensors(ids).logits)


def test_trained_tiny_model_prefers_real_continuations(tiny_zh_demo_dir):
    """A few seconds of training already beat a unigram model on held-out text: its output is not noise."""
    report = json.loads((tiny_zh_demo_dir / "training_report.json").read_text(encoding="utf-8"))
    assert report["val_perplexity"] < 0.8 * report["unigram_val_perplexity"], report
    assert report["val_unk_fraction"] < 0.1


def test_uer_layout_folder_is_listed_and_chosen_by_name(tiny_zh_bin_dir, tmp_path):
    shutil.copytree(tiny_zh_bin_dir, tmp_path / "uer-style")
    assert list_local_models(tmp_path) == ["uer-style"]
    source = resolve_choice("uer-style", tmp_path)
    assert (source.name, source.location) == ("uer-style", str(tmp_path / "uer-style"))
    assert TorchBackend(source, device="cpu").info.backend == "torch"


def test_demo_zh_spec_uses_the_cached_chinese_demo_folder(tiny_zh_demo_dir):
    source = resolve_model("demo-zh", demo_zh_dir=tiny_zh_demo_dir)
    assert source.location == str(tiny_zh_demo_dir) and source.name == "tiny-zh-demo" and source.notice is None


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_onnx_export_of_a_bin_only_bert_tokenizer_model_runs(tiny_zh_bin_dir, tmp_path, variant):
    from playground.backends.onnx import OnnxBackend

    source = resolve_model(str(tiny_zh_bin_dir))
    onnx = OnnxBackend(source, variant=variant, device="cpu", exports_root=tmp_path, progress=False)
    assert onnx.manifest["verification"]["checked"] and onnx.info.context_length == 64
    torch_backend = TorchBackend(source, device="cpu")
    ids = source.tokenizer(POEM)["input_ids"][:-1]
    got, cache = onnx.prefill(ids)
    expected, _ = torch_backend.prefill(ids)
    if variant == "fp32":
        torch.testing.assert_close(got, expected, atol=1e-3, rtol=1e-3)
    else:  # int8: the same top choice at most positions
        assert (got.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.7
    step, _ = onnx.step(ids[-1], cache)
    assert step.shape == (len(source.tokenizer),) and torch.isfinite(step).all()


def test_changing_the_bin_weights_makes_the_export_stale(tiny_zh_bin_dir, tmp_path):
    from playground.models import source_fingerprint

    folder = tmp_path / "m"
    shutil.copytree(tiny_zh_bin_dir, folder)
    before = source_fingerprint(resolve_model(str(folder)))
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    state["transformer.ln_f.bias"] += 1.0
    torch.save(state, folder / "pytorch_model.bin")
    assert source_fingerprint(resolve_model(str(folder))) != before


# ---- refusals: pickles that are not plain tensors, custom code, other architectures -------------------


class RunsCodeWhenUnpickled:
    """What a hostile pickle does: unpickling calls a function of the author's choosing."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("payload", ["code", "list", "tensor"])
def test_a_bin_that_is_not_a_plain_state_dict_is_refused(tiny_zh_bin_dir, tmp_path, payload):
    folder = tmp_path / "bad"
    shutil.copytree(tiny_zh_bin_dir, folder)
    marker = tmp_path / "code-ran"
    obj = {"code": {"transformer.wte.weight": RunsCodeWhenUnpickled(marker)}, "list": [torch.zeros(2)], "tensor": torch.zeros(3)}[payload]
    torch.save(obj, folder / "pytorch_model.bin")
    source = resolve_model(str(folder))  # the files look right: the refusal comes when the weights are read
    with pytest.raises(ModelLoadError, match=r"weights_only=True.*refused"):
        TorchBackend(source, device="cpu")
    assert not marker.exists()


@pytest.mark.parametrize("file_name", ["config.json", "tokenizer_config.json"])
def test_a_folder_that_needs_remote_code_is_refused(tiny_zh_bin_dir, tmp_path, file_name):
    folder = tmp_path / "custom"
    shutil.copytree(tiny_zh_bin_dir, folder)
    data = json.loads((folder / file_name).read_text())
    data["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilGPT", "AutoTokenizer": ["tokenization_evil.Evil", None]}
    (folder / file_name).write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match=rf"own Python code \(`auto_map` in its {file_name}\).*trust_remote_code"):
        resolve_model(str(folder))
    shutil.copytree(folder, tmp_path / "root" / "custom")
    with pytest.raises(ModelLoadError, match="own Python code"):
        resolve_choice("custom", tmp_path / "root")


def test_a_folder_of_another_architecture_is_refused(tiny_zh_bin_dir, tmp_path):
    folder = tmp_path / "bert"
    shutil.copytree(tiny_zh_bin_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "bert", "architectures": ["BertForMaskedLM"]}))
    with pytest.raises(ModelLoadError, match="is a bert model .*GPT-2 family models only"):
        resolve_model(str(folder))


def test_a_folder_without_any_weights_says_what_it_needs(tiny_zh_bin_dir, tmp_path):
    folder = tmp_path / "empty"
    shutil.copytree(tiny_zh_bin_dir, folder)
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(ModelLoadError, match=r"no weights .*model\.safetensors.*pytorch_model\.bin"):
        resolve_model(str(folder))
    assert list_local_models(tmp_path) == []


# ---- the corpus -------------------------------------------------------------------------------------


def test_fortune_entries_lose_colour_codes_and_attributions():
    poem = "\x1b[32m《静夜思》\x1b[m\n\x1b[33m作者：李白\x1b[m\n床前明月光，疑是地上霜。\n举头望明月，低头思故乡。"
    assert clean_entry(poem) == "《静夜思》\n床前明月光，疑是地上霜。\n举头望明月，低头思故乡。"
    song = "\x1b[32m题目:《元日》\x1b[m\n\x1b[33m作者:王安石（１０２１－１０８６）\x1b[m\n爆竹声中一岁除，春风送暖入屠苏。"
    assert clean_entry(song) == "《元日》\n爆竹声中一岁除，春风送暖入屠苏。"
    saying = "家国兴亡自有时，吴人何苦怨西施。\n\x1b[33m    -- 罗隐\x1b[32m《西施》\x1b[m\x1b[m"
    assert clean_entry(saying) == "家国兴亡自有时，吴人何苦怨西施。"
    assert clean_entry("12.4.4. gdb commands\n    (gdb) thread apply all bt  显示") is None  # a manual excerpt


def test_gb_encoded_fortunes_are_decoded_not_garbled():
    assert decode_fortune_bytes(POEM.encode("gb18030")) == POEM
    assert decode_fortune_bytes(POEM.encode("gbk")) == POEM
    assert decode_fortune_bytes(POEM.encode("utf-8")) == POEM


def test_the_corpus_is_chinese_text_without_attributions():
    texts = load_zh_texts()
    assert len(texts) > 4000 and sum(map(len, texts)) > 250_000
    joined = "\n".join(texts)
    assert "\x1b" not in joined
    assert not [line for line in joined.splitlines() if line.startswith(("作者：", "作者:", "--", "题目"))]
    assert any("床前明月光" in text for text in texts)


def test_missing_fortunes_zh_says_how_to_install_it(tmp_path):
    with pytest.raises(ModelLoadError, match="apt-get install fortunes-zh"):
        load_zh_texts(fortunes_dir=tmp_path)
