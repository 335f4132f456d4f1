"""House rules that no linter checks: one docstring style, and an ``import dreamgym`` that stays light.

ruff and mypy (``make lint``, configured in ``pyproject.toml``) check the rest.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dreamgym"
SPHINX_FIELD = re.compile(r"^\s*:(param|type|return|returns|rtype|raises?)\b", re.MULTILINE)


def sphinx_docstrings(path: Path, relative: str) -> list[str]:
    """The definitions in ``path`` whose docstrings use Sphinx fields (``:param x:``) instead of Google sections."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        name = getattr(node, "name", "<module>")
        doc = ast.get_docstring(node, clean=False)
        if doc and SPHINX_FIELD.search(doc):
            found.append(f"{relative}:{node.lineno} {name}")
    return found


def test_docstrings_use_google_sections():
    """Args:, Returns:, Raises: (the Google style ruff's pydocstyle rules check), never :param: fields."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        offenders += sphinx_docstrings(path, path.relative_to(PACKAGE).as_posix())
    assert not offenders, f"use Args:/Returns:/Raises: sections, not :param: fields, in {offenders}"


def test_the_check_finds_a_sphinx_docstring(tmp_path):
    (tmp_path / "m.py").write_text('def f(x):\n    """Do.\n\n    :param x: a thing.\n    """\n')
    assert sphinx_docstrings(tmp_path / "m.py", "m.py") == ["m.py:1 f"]


HEAVY = ("torch", "stable_baselines3", "matplotlib", "cma", "ray")


@pytest.mark.slow
def test_import_dreamgym_and_the_command_line_stay_light():
    """Collection workers and ``gym.make("dreamgym:...")`` import dreamgym; ``dreamgym --help`` imports the CLI.

    Neither may pull in torch, Stable-Baselines3, matplotlib, pycma or Ray: the modules on
    that path import those inside the functions that need them.
    """
    code = f"import sys, dreamgym, dreamgym.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
