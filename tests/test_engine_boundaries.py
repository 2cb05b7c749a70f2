"""House rules that keep the engine usable without the UI (docs/ARCHITECTURE.md, "Rules the code keeps"), and
every engine module shipped wherever the engine goes."""

import ast
import subprocess
import sys
from pathlib import Path

from helpers import REPO

ENGINE = REPO / "tuning"


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def engine_modules() -> list[str]:
    """Every module of the engine, package by package, as its path under the repository."""
    return sorted(p.relative_to(REPO).as_posix() for p in ENGINE.rglob("*.py") if "__pycache__" not in p.parts)


def test_engine_never_imports_gradio():
    modules = engine_modules()
    assert len(modules) > 60 and any("/" in m.removeprefix("tuning/") for m in modules)  # walks the packages
    offenders = [m for m in modules if "gradio" in imported_modules(REPO / m)]
    assert offenders == []


def test_a_cluster_bundle_and_the_space_upload_carry_every_engine_module(tmp_path):
    from tuning.hub.space import app_files
    from tuning.portable.bundle import _package_files

    assert set(engine_modules()) <= set(_package_files())
    assert set(engine_modules()) <= set(app_files())


def test_importing_the_cli_loads_no_heavy_library():
    code = ("import sys, tuning.cli, tuning.config, tuning.data.examples, tuning.runs.files;"
            "print(sorted(m for m in ('torch', 'transformers', 'gradio', 'peft') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_no_init_in_datasets_folder():
    # datasets/__init__.py would shadow the Hugging Face `datasets` package.
    assert not (REPO / "datasets" / "__init__.py").exists()
