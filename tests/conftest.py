"""Shared fixtures: an isolated GENACCEL_HOME per test, offline hub, tiny pipelines built once."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
warnings.filterwarnings("ignore", category=FutureWarning)

from genaccel.settings import Settings  # noqa: E402


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("GENACCEL_HOME", str(home))
    for key in list(os.environ):
        if key.startswith("GENACCEL_") and key != "GENACCEL_HOME":
            monkeypatch.delenv(key)
    monkeypatch.setenv("GENACCEL_DEFAULT_MODEL", "tiny-sd")  # fast; reference models are tested on purpose
    return home


@pytest.fixture
def settings(isolated_home: Path) -> Settings:
    return Settings(home=isolated_home, default_model="tiny-sd")


@pytest.fixture(scope="session")
def tiny_sd():  # type: ignore[no-untyped-def]
    from pipelines.tiny import build_tiny_sd

    pipe = build_tiny_sd()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def tiny_dit():  # type: ignore[no-untyped-def]
    from pipelines.tiny import build_tiny_dit

    pipe = build_tiny_dit()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def hooked(module: torch.nn.Module) -> list[str]:
    """Sub-modules still carrying a diffusers hook or an instance ``forward`` (a technique left behind)."""
    return [name for name, m in module.named_modules() if hasattr(m, "_diffusers_hook") or "forward" in m.__dict__]


@pytest.fixture(scope="module")
def sd4():  # type: ignore[no-untyped-def]
    """An SD-1.5-shaped UNet (4 levels, 2 layers each, cross-attention from the first level) at toy width."""
    from diffusers import UNet2DConditionModel

    from pipelines.tiny import build_tiny_sd

    pipe = build_tiny_sd()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        pipe.unet = UNet2DConditionModel(block_out_channels=(16, 32, 32, 32), layers_per_block=2, sample_size=32,
                                         cross_attention_dim=16, norm_num_groups=8, attention_head_dim=4)
    pipe.set_progress_bar_config(disable=True)
    return pipe
