"""The code follows the lint rules of pyproject.toml ``[tool.ruff]`` (pyflakes, pycodestyle, isort order,
bugbear, pyupgrade): an unused import, a shadowed loop variable in a closure or an unsorted import block fails
here, not in review.  ``make lint`` runs the same check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing() -> None:
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
