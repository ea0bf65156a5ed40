"""The benchmark matrix: a small YAML/JSON document, validated before anything runs."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from genaccel.errors import BadInputFile, GenAccelError, InvalidRequest
from genaccel.spec import TechniqueSpec

SIZE = re.compile(r"^(\d+)x(\d+)$")


class QualitySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    prompts: int = Field(200, ge=8, le=5000)
    """Captions of the reference generator, one image each: alternately from trained and held-out
    shape-colour pairs, and (``captions: mixed``) alternately in the full and a natural form."""
    seed: int = Field(1234, ge=0, le=2**32 - 1)
    captions: Literal["mixed", "full"] = "mixed"
    """``full``: every caption in the one fixed form; ``mixed``: half of them natural (attributes
    left out, synonyms, other word orders)."""
    extra_prompts: list[str] = Field(default_factory=list, max_length=100)
    """Further prompts rendered and scored as given; those the caption parser cannot read are
    counted as ``unparsable_prompts``, not scored."""


class Variant(BaseModel):
    """A row label with an explicit technique list (on top of the ``off`` profile), optionally on
    another model (a distilled student measured against its teacher's baseline row) and at its
    own step count."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    profile: str = "off"
    techniques: list[TechniqueSpec] = Field(default_factory=list)
    model: str | None = None
    """Run this row on another model; speed-up and fidelity stay against the group's baseline."""
    steps: int | None = Field(default=None, ge=1, le=200)
    """This row's step count, whatever the matrix's ``steps`` say (null: the matrix's)."""


class BenchMatrix(BaseModel):
    """Rows are the product models x sizes x batch x profiles x steps, in that order. The first
    profile at the first step count is each (model, size, batch) group's baseline."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = "bench"
    models: list[str] = Field(min_length=1)
    profiles: list[str | Variant] = Field(default=["off"], min_length=1)
    """Profile names, technique names (default options), or ``{name, profile, techniques}``."""
    steps: list[int | None] = Field(default=[None], min_length=1)
    """``null`` means the model's default step count."""
    sizes: list[str | None] = Field(default=[None], min_length=1)
    batch: list[int] = Field(default_factory=lambda: [1], min_length=1)
    repeats: int = Field(3, ge=1, le=100)
    warmup: int = Field(1, ge=0, le=10)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    quality: QualitySpec = Field(default_factory=lambda: QualitySpec.model_validate({}))

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, sizes: list[str | None]) -> list[str | None]:
        for size in sizes:
            if size is not None and not SIZE.match(size):
                raise ValueError(f"size {size!r} is not WIDTHxHEIGHT, e.g. 64x64")
        return sizes

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[int | None]) -> list[int | None]:
        for n in steps:
            if n is not None and not 1 <= n <= 200:
                raise ValueError(f"steps {n} is outside 1..200")
        return steps

    @field_validator("batch")
    @classmethod
    def _batch(cls, batch: list[int]) -> list[int]:
        for n in batch:
            if not 1 <= n <= 8:
                raise ValueError(f"batch {n} is outside 1..8")
        return batch

    def variants(self) -> list[Variant]:
        from genaccel.accel import technique_names
        from genaccel.profiles import PROFILES

        out = []
        for entry in self.profiles:
            if isinstance(entry, Variant):
                out.append(entry)
            elif entry in PROFILES or entry not in technique_names():
                out.append(Variant(name=entry, profile=entry))
            else:
                out.append(Variant(name=entry, techniques=[TechniqueSpec(name=entry)]))
        return out

    def rows(self) -> list[BenchRow]:
        out = []
        variants = self.variants()
        for model, size, batch, variant, steps in itertools.product(
            self.models, self.sizes, self.batch, variants, self.steps
        ):
            width, height = (int(v) for v in size.split("x")) if size else (None, None)
            own = variant.steps if variant.steps is not None else steps
            out.append(BenchRow(variant.model or model, variant.name, variant.profile, tuple(variant.techniques), own,
                                width, height, batch, baseline=(variant == variants[0] and steps == self.steps[0]),
                                base_model=model))
        return out


@dataclass(frozen=True)
class BenchRow:
    model: str
    label: str
    profile: str
    techniques: tuple[TechniqueSpec, ...]
    steps: int | None
    width: int | None
    height: int | None
    batch: int
    baseline: bool
    base_model: str = ""
    """The matrix model whose baseline row this row is compared with (``model`` unless a variant
    names another)."""

    @property
    def group(self) -> tuple[str, int | None, int | None, int]:
        return (self.base_model or self.model, self.width, self.height, self.batch)


def parse_matrix(data: dict[str, Any], source: str = "matrix") -> BenchMatrix:
    try:
        return BenchMatrix.model_validate(data)
    except PydanticValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "matrix"
        raise InvalidRequest(f"{source}: {field}", err.get("input"), err["msg"],
                             "see bench/README.md for the matrix format") from None


def load_matrix(path: Path) -> BenchMatrix:
    """Read a ``.yaml``/``.yml``/``.json`` matrix file."""
    if not path.is_file():
        raise BadInputFile(f"matrix file {str(path)!r} does not exist; fix: pass a .yaml or .json file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:
        raise BadInputFile(f"matrix file {path} cannot be parsed ({exc}); fix: check its syntax") from None
    if not isinstance(data, dict):
        raise GenAccelError(f"matrix file {path} must hold a mapping; fix: see bench/README.md")
    return parse_matrix(data, source=path.name)
