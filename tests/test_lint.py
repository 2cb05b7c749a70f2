"""The code stays lint-clean: `ruff check` with the settings in pyproject.toml, over the whole repository."""

import subprocess
import sys

from helpers import REPO


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
