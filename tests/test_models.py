"""Model resolution: local folders, the demo model, the offline fallback, and refusals with clear messages."""

import shutil

import pytest

from playground.backends.torch import TorchBackend, resolve_torch_device
from playground.errors import DeviceError, ModelLoadError
from playground.models import hub_reachable, list_local_models, resolve_choice, resolve_model


def test_local_folder_loads_through_the_normal_path(tiny_model_dir):
    source = resolve_model(str(tiny_model_dir))
    assert source.name == "tiny-gpt2" and source.notice is None
    backend = TorchBackend(source, device="cpu")
    assert backend.info.backend == "torch" and backend.info.provider == "cpu"
    assert backend.model.config.model_type == "gpt2"
    assert backend.model.__class__.__name__ == "GPT2LMHeadModel"


def test_demo_spec_uses_the_cached_demo_folder(tiny_model_dir):
    source = resolve_model("demo", demo_dir=tiny_model_dir)
    assert source.location == str(tiny_model_dir) and source.notice is None


def test_offline_hub_id_falls_back_to_the_demo_model_with_a_notice(tiny_model_dir, capsys):
    assert not hub_reachable()  # HF_HUB_OFFLINE=1 in the tests
    source = resolve_model("gpt2", demo_dir=tiny_model_dir)
    assert source.location == str(tiny_model_dir)
    assert source.requested == "gpt2"
    assert "unreachable" in source.notice and "'gpt2'" in source.notice
    assert capsys.readouterr().out.strip().count("\n") == 0  # one clear line


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_a_bin_that_is_not_a_torch_pickle_is_refused_when_loaded(tiny_model_dir, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")  # safetensors bytes under the .bin name
    source = resolve_model(str(folder))
    with pytest.raises(ModelLoadError, match=r"pytorch_model\.bin .*weights_only=True"):
        TorchBackend(source, device="cpu")


def test_folder_without_weights_is_refused(tiny_model_dir, tmp_path):
    folder = tmp_path / "no-weights"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no weights the playground loads"):
        resolve_model(str(folder))


def test_safetensors_win_over_a_bin_beside_them(tiny_model_dir, tmp_path):
    folder = tmp_path / "both"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "pytorch_model.bin").write_bytes(b"never read")
    assert TorchBackend(resolve_model(str(folder)), device="cpu").model.config.model_type == "gpt2"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_cuda_request_without_gpu_falls_back_to_cpu_with_a_note():
    device, notice = resolve_torch_device("cuda")
    assert device == "cpu" and "no usable GPU" in notice
    assert resolve_torch_device("auto") == ("cpu", None)
    with pytest.raises(DeviceError):
        resolve_torch_device("tpu")


# ---- choosing a model from the UI or the API: allow-listed folders and hub ids only ----------------

def test_choice_lists_and_opens_only_the_models_folder(models_root, tmp_path):
    import shutil

    # A folder of its own: the shared one gains the models that other tests fine-tune into it.
    root = tmp_path / "models"
    for name in ("tiny-copy", "tiny-zh"):
        shutil.copytree(models_root / name, root / name)
    (root / ".hidden").mkdir()
    (root / "not-a-model").mkdir()
    assert list_local_models(root) == ["tiny-copy", "tiny-zh"]  # tiny-zh: pytorch_model.bin weights only
    source = resolve_choice(" tiny-copy ", root)
    assert (source.name, source.location) == ("tiny-copy", str(root / "tiny-copy"))


@pytest.mark.parametrize("choice", ["/etc", "../models-root/tiny-copy", "./tiny-copy", "~/.ssh", "a/b/c", "x" * 300,
                                    "tiny-copy/../tiny-copy", "C:\\Windows", "", None, 42, "not-a-model"])
def test_choice_refuses_paths_and_garbage(models_root, choice):
    with pytest.raises(ModelLoadError, match="cannot be chosen here|hub is unreachable"):
        resolve_choice(choice, models_root)


def test_choice_refuses_a_hub_id_that_is_a_folder_here(models_root, tiny_model_dir, monkeypatch):
    # transformers would load "owner/name" from ./owner/name if that folder exists: never from the UI.
    monkeypatch.chdir(tiny_model_dir.parent.parent)
    relative = f"{tiny_model_dir.parent.name}/{tiny_model_dir.name}"
    with pytest.raises(ModelLoadError, match="cannot be chosen here"):
        resolve_choice(relative, models_root)


def test_choice_of_an_uncached_hub_id_offline_says_so_without_falling_back(models_root):
    with pytest.raises(ModelLoadError, match="hub is unreachable and 'distilgpt2' is not in the local cache"):
        resolve_choice("distilgpt2", models_root)


def test_playground_runs_a_chosen_model_and_keeps_few_loaded(tiny_source, tiny_model_dir, tmp_path, monkeypatch):
    from playground import registry
    from playground.config import GenerationSettings
    from playground.service import Playground

    for name in ("m1", "m2", "m3"):
        shutil.copytree(tiny_model_dir, tmp_path / name)
    monkeypatch.setattr(registry, "MAX_LOADED_MODELS", 2)
    playground = Playground(tiny_source, device="cpu", models_root=tmp_path)
    assert playground.model_choices() == ["tiny-gpt2", "m1", "m2", "m3"]
    assert playground.context_length("m1") == 64 and not playground._backends  # read from the config alone
    settings = GenerationSettings(max_new_tokens=5, seed=4)
    texts = {}
    for model in ("tiny-gpt2", "m1", "m2", "m3"):
        run = playground.start("The value", settings, model=model)
        list(playground.stream(run))
        assert run.result.info.model == model
        texts[model] = run.result.text
    assert len(set(texts.values())) == 1  # the same weights under four names
    loaded = {key[0] for key in playground._backends}
    assert loaded == {"tiny-gpt2", "m3"}  # the default stays; the least recently used others went
    with pytest.raises(ModelLoadError, match="cannot be chosen here"):
        playground.start("x", settings, model=str(tiny_model_dir))
