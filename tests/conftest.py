"""Shared fixtures: an isolated GENACCEL_HOME per test, offline hub, tiny pipelines built once."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

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
