"""House rules that keep the engine usable without the UI (DESIGN.md rules 1 and 7)."""

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


def test_engine_never_imports_gradio():
    offenders = [p.name for p in ENGINE.glob("*.py") if "gradio" in imported_modules(p)]
    assert offenders == []


def test_importing_the_cli_loads_no_heavy_library():
    code = ("import sys, tuning.cli, tuning.config, tuning.data, tuning.run_files;"
            "print(sorted(m for m in ('torch', 'transformers', 'gradio', 'peft') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_no_init_in_datasets_folder():
    # datasets/__init__.py would shadow the Hugging Face `datasets` package.
    assert not (REPO / "datasets" / "__init__.py").exists()
