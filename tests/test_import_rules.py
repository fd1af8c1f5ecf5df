"""Enforces the layering in STYLE.md: packages import only leftwards, and nnssl never imports nnssl_trainers."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Each nnssl subpackage may import only the subpackages listed for it (besides itself and top-level modules
# nnssl.paths / nnssl.errors). Two chains meet in training and cli: config -> data -> planning -> preprocessing,
# and config -> models -> losses -> methods -> training -> cli.
ALLOWED: dict[str, set[str]] = {
    "config": set(),
    "data": {"config"},
    "planning": {"config", "data"},
    "preprocessing": {"config", "data", "planning"},
    "models": {"config"},
    "losses": {"config", "models"},
    "methods": {"config", "models", "losses"},
    "augment": {"config"},
    "training": {"config", "data", "augment", "models", "losses", "methods"},
    "cli": {"config", "data", "planning", "preprocessing", "augment", "models", "losses", "methods", "training"},
}
TOP_LEVEL_MODULES = {"paths", "errors"}


def _imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _python_files(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


@pytest.mark.parametrize("path", _python_files("nnssl"), ids=lambda p: str(p.relative_to(REPO)))
def test_nnssl_imports_only_leftwards(path: Path) -> None:
    parts = path.relative_to(REPO / "nnssl").parts
    own = parts[0] if len(parts) > 1 else None  # None: a top-level module such as paths.py
    for module in _imported_modules(path):
        assert not module.startswith("nnssl_trainers"), f"{path}: nnssl must never import nnssl_trainers"
        if not module.startswith("nnssl.") or own is None:
            continue
        target = module.split(".")[1]
        if target in TOP_LEVEL_MODULES or target == own:
            continue
        assert target in ALLOWED.get(own, set()), f"{path}: nnssl.{own} may not import {module} (see STYLE.md)"


@pytest.mark.parametrize("path", _python_files("nnssl_trainers"), ids=lambda p: str(p.relative_to(REPO)))
def test_trainers_use_only_the_public_nnssl_parts(path: Path) -> None:
    allowed = ("nnssl.models", "nnssl.config", "nnssl.training.checkpoint", "nnssl.paths", "nnssl.errors",
               "nnssl.methods.registry")
    for module in _imported_modules(path):
        if module.startswith("nnssl.") or module == "nnssl":
            assert module.startswith(allowed) or module == "nnssl", f"{path}: nnssl_trainers may not import {module}"


def test_rules_cover_every_subpackage() -> None:
    subpackages = {p.name for p in (REPO / "nnssl").iterdir() if (p / "__init__.py").is_file()}
    assert subpackages <= set(ALLOWED), f"add import rules for: {sorted(subpackages - set(ALLOWED))}"
