from __future__ import annotations

import json
from pathlib import Path

import pytest

from genaccel.errors import ModelNotAvailable, UnknownModel, UnsafeModel
from genaccel.settings import Settings
from pipelines.loader import load_pipeline, resolve_device
from pipelines.registry import ModelRegistry


@pytest.fixture(scope="module")
def saved_sd(tmp_path_factory: pytest.TempPathFactory, tiny_sd) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("models") / "my-sd"
    tiny_sd.save_pretrained(path)
    return path


def test_builtins_resolve_without_loading(settings: Settings) -> None:
    reg = ModelRegistry(settings)
    info = reg.resolve("tiny-sd")
    assert (info.modality, info.family, info.source) == ("image", "sd-unet", "builtin")
    assert reg.resolve("tiny-dit").family == "image-dit"


def test_unknown_model_lists_choices(settings: Settings) -> None:
    choices = r"(.*, )?noop, .*, tiny-sd, .*tiny-wan-i2v \(see `genaccel models`\)"
    with pytest.raises(UnknownModel, match=r"nope. is invalid: no such model; fix: use one of: " + choices):
        ModelRegistry(settings).resolve("nope")


def test_hub_id_missing_from_cache_is_named_with_fix(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelNotAvailable, match=r"model 'org/model' is not in the local Hugging Face cache.*fix: run"):
        ModelRegistry(settings).resolve("org/model")


def test_local_folder_and_model_dirs(settings: Settings, saved_sd: Path) -> None:
    info = ModelRegistry(settings).resolve(str(saved_sd))
    assert info.source == "folder" and info.family == "sd-unet" and info.defaults.width == 64
    served = Settings(home=settings.home, model_dirs=[saved_sd.parent])
    reg = ModelRegistry(served)
    assert "my-sd" in reg.names()
    pipe = load_pipeline(reg.resolve("my-sd"), resolve_device("cpu"), __import__("torch").float32)
    assert type(pipe).__name__ == "StableDiffusionPipeline"


def test_paths_refused_when_not_allowed(settings: Settings, saved_sd: Path) -> None:
    with pytest.raises(UnknownModel, match="arbitrary paths are not served here"):
        ModelRegistry(settings, allow_paths=False).resolve(str(saved_sd))


def test_folder_without_index(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(UnknownModel, match="not a diffusers pipeline folder"):
        ModelRegistry(settings).resolve(str(tmp_path))


def _copy_index(src: Path, dst: Path, **changes: object) -> Path:
    dst.mkdir()
    index = json.loads((src / "model_index.json").read_text())
    index.update(changes)
    (dst / "model_index.json").write_text(json.dumps(index))
    return dst


def test_custom_code_is_refused(settings: Settings, saved_sd: Path, tmp_path: Path) -> None:
    bad = _copy_index(saved_sd, tmp_path / "custom", _class_name="EvilPipeline")
    with pytest.raises(UnsafeModel, match="not part of diffusers; genaccel never runs remote or custom code"):
        ModelRegistry(settings).resolve(str(bad))
    bad2 = _copy_index(saved_sd, tmp_path / "custom2", unet=["my_module", "MyUNet"])
    with pytest.raises(UnsafeModel, match="comes from library 'my_module'"):
        ModelRegistry(settings).resolve(str(bad2))


def test_pickle_only_weights_are_refused(settings: Settings, saved_sd: Path, tmp_path: Path) -> None:
    bad = _copy_index(saved_sd, tmp_path / "pickled")
    (bad / "unet").mkdir()
    (bad / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(UnsafeModel, match=r"only pickled weights .*loads safetensors only"):
        ModelRegistry(settings).resolve(str(bad))
