"""Model resolution: local folders, the demo model, the offline fallback, and refusals with clear messages."""

import shutil

import pytest

from playground.backends.torch_backend import TorchBackend, resolve_torch_device
from playground.errors import DeviceError, ModelLoadError
from playground.models import hub_reachable, resolve_model


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


def test_pickled_weights_are_refused(tiny_model_dir, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="safetensors only"):
        resolve_model(str(folder))


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_cuda_request_without_gpu_falls_back_to_cpu_with_a_note():
    device, notice = resolve_torch_device("cuda")
    assert device == "cpu" and "no usable GPU" in notice
    assert resolve_torch_device("auto") == ("cpu", None)
    with pytest.raises(DeviceError):
        resolve_torch_device("tpu")
