"""Layer rules (docs/design.md): dependencies point one way, checked on every import statement of
the source tree, including those inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ("genaccel/spec.py", "genaccel/errors.py", "genaccel/settings.py", "genaccel/families.py",
        "genaccel/events.py", "genaccel/webhooks.py", "genaccel/profiles.py", "genaccel/store",
        "genaccel/queue", "genaccel/accel", "genaccel/metrics", "genaccel/artifacts")
RULES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # layer: (its files, the packages it must not import)
    "core": (CORE, ("pipelines", "workers", "ui", "genaccel.api", "genaccel.service", "genaccel.cli")),
    "pipelines": (("pipelines",), ("workers", "ui", "genaccel.api", "genaccel.service", "genaccel.cli")),
    "service": (("genaccel/service",), ("workers", "ui", "genaccel.api", "genaccel.cli")),
    "api": (("genaccel/api",), ("workers", "ui", "genaccel.cli")),
    "ui": (("ui",), ("workers", "genaccel.api", "genaccel.cli")),
    "workers": (("workers",), ("ui", "genaccel.api", "genaccel.cli")),
}


def files(parts: tuple[str, ...]) -> list[Path]:
    out: list[Path] = []
    for part in parts:
        path = ROOT / part
        out += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return out


def imported(path: Path) -> set[str]:
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                found.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                found.add(node.module)
    return found


@pytest.mark.parametrize("layer", sorted(RULES))
def test_layer_imports_point_one_way(layer: str) -> None:
    parts, banned = RULES[layer]
    broken = [f"{path.relative_to(ROOT)} imports {name}" for path in files(parts) for name in sorted(imported(path))
              if any(name == b or name.startswith(b + ".") for b in banned)]
    assert not broken, "\n".join(broken)


def test_every_source_file_is_in_some_layer_or_a_composition_root() -> None:
    roots = {"genaccel/cli.py", "genaccel/serve.py", "genaccel/__init__.py", "genaccel/batch.py"}
    tools = ("genaccel/bench", "genaccel/training", "genaccel/refdata",  # offline tools on top of pipelines
             "genaccel/commands")  # the CLI's commands: the composition root
    covered = {p for parts, _ in RULES.values() for p in files(parts)} | set(files(tools))
    loose = [str(p.relative_to(ROOT)) for p in files(("genaccel",)) if p not in covered
             and str(p.relative_to(ROOT)) not in roots]
    assert not loose, f"put these in a layer of tests/test_layers.py: {loose}"
