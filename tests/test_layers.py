"""The layers of dreamgym point one way: every import of a dreamgym module goes down, or stays inside its layer.

From the bottom up:

- ``base``: what every layer shares (errors, argument checks, safe file I/O, the world
  model's config, frame preprocessing, the episode store, checkpoints, the worker backends);
- ``models``: V, M, the world model bundle and loading it from a folder or the Hub;
- ``envs``: the dream and the real env seen through V + M;
- ``data``, ``training`` and ``agents``: side by side, and none imports another;
- ``top``: the package root, the pipeline (build, package, push), the pictures (visualize,
  play, card), the demo and the command line.

Each module's imports are read from its source with :mod:`ast`: module-level ones and those
inside functions alike, and the string entry points (``"dreamgym.envs.dream:DreamCarRacingEnv"``)
that load a module lazily. The tests at the end show that the check does fail on an upward
or a sideways import.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dreamgym"

# Layer -> the modules and packages in it. A module belongs to the layer of its longest
# listed prefix, so one module can sit in another layer than its package.
LAYERS: dict[str, tuple[str, ...]] = {
    "base": (
        "dreamgym.backends",
        "dreamgym.checkpoints",
        "dreamgym.config",
        "dreamgym.episodes",
        "dreamgym.errors",
        "dreamgym.files",
        "dreamgym.preprocessing",
        "dreamgym.safe_files",
        "dreamgym.validation",
        "dreamgym.version",
    ),
    "models": ("dreamgym.models", "dreamgym.hub"),
    "envs": ("dreamgym.envs",),
    "data": ("dreamgym.data",),
    "training": ("dreamgym.training",),
    "agents": ("dreamgym.agents",),
    "top": (
        "dreamgym",  # the package root: registers the envs and the agent-driven collection policies
        "dreamgym.card",
        "dreamgym.cli",
        "dreamgym.demo",
        "dreamgym.pipeline",
        "dreamgym.play",
        "dreamgym.push",
        "dreamgym.sb3",
        "dreamgym.training.build",  # the old home of the pipeline, kept as an alias of dreamgym.pipeline
        "dreamgym.visualize",
    ),
}
# Layers of one rank sit side by side and may not import one another.
RANK = {"base": 0, "models": 1, "envs": 2, "data": 3, "training": 3, "agents": 3, "top": 4}

_ENTRY_POINT = re.compile(r"^(dreamgym(?:\.\w+)*)(?::[\w.]+)?$")


def layer_of(module: str) -> str | None:
    """The layer of ``module``: that of its longest prefix listed in :data:`LAYERS` (the root only matches itself)."""
    best, layer = -1, None
    for name, prefixes in LAYERS.items():
        for prefix in prefixes:
            matches = module == prefix or (prefix != "dreamgym" and module.startswith(prefix + "."))
            if matches and len(prefix) > best:
                best, layer = len(prefix), name
    return layer


def allowed(importer: str, imported: str) -> bool:
    """Whether a module of layer ``importer`` may import one of layer ``imported``."""
    return importer == imported or RANK[imported] < RANK[importer]


def _docstrings(tree: ast.AST) -> set[int]:
    """``id`` of the string constants that are docstrings (not entry points, whatever they say)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def imported_modules(module: str, source: str, known: set[str]) -> list[tuple[int, str]]:
    """``(line, module)`` for every dreamgym module that ``source`` (the text of ``module``) imports.

    ``from dreamgym.x import y`` counts as importing ``dreamgym.x.y`` when that is a module,
    else ``dreamgym.x``; relative imports are resolved against ``module``.
    """
    tree = ast.parse(source)
    is_package = module + ".__init__" in known
    found: list[tuple[int, str]] = []

    def resolve(name: str) -> str:
        # The deepest known module that `name` lies in.
        parts = name.split(".")
        while parts and ".".join(parts) not in known:
            parts.pop()
        return ".".join(parts) if parts else name

    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, resolve(a.name)) for a in node.names if a.name.split(".")[0] == "dreamgym"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source_module = ".".join(base + ([node.module] if node.module else []))
            else:
                source_module = node.module or ""
            if source_module.split(".")[0] != "dreamgym":
                continue
            for alias in node.names:
                candidate = f"{source_module}.{alias.name}"
                found.append((node.lineno, candidate if candidate in known else resolve(source_module)))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            match = _ENTRY_POINT.match(node.value)
            if match and match.group(1) in known and match.group(1) != "dreamgym":
                found.append((node.lineno, match.group(1)))
    return found


def package_sources(root: Path = PACKAGE) -> dict[str, str]:
    """Every module of the package by dotted name (``dreamgym.x.__init__`` for a package's own file)."""
    sources = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        sources[".".join(parts)] = path.read_text(encoding="utf-8")
    return sources


def violations(sources: dict[str, str]) -> list[str]:
    """One line per import that goes up a layer or sideways, and per module no layer claims."""
    known = set(sources) | {name.removesuffix(".__init__") for name in sources if name.endswith(".__init__")}
    problems: list[str] = []
    for name, source in sorted(sources.items()):
        module = name.removesuffix(".__init__")
        layer = layer_of(module)
        if layer is None:
            problems.append(f"{module}: in no layer; add it to LAYERS in tests/test_layers.py")
            continue
        for line, target in imported_modules(module, source, known):
            target_layer = layer_of(target)
            if target_layer is not None and not allowed(layer, target_layer):
                direction = "sideways" if RANK[target_layer] == RANK[layer] else "upward"
                problem = f"{module}:{line} ({layer}) imports {target} ({target_layer}): {direction}"
                if problem not in problems:  # `from x import a, b` is one import
                    problems.append(problem)
    return problems


def test_every_import_points_down_or_stays_in_its_layer() -> None:
    problems = violations(package_sources())
    assert not problems, "imports against the layers:\n" + "\n".join(problems)


# ------------------------------------------------------------ the check itself can fail
def _sources(**modules: str) -> dict[str, str]:
    sources = {"dreamgym.__init__": "", "dreamgym.data.__init__": "", "dreamgym.agents.__init__": "",
               "dreamgym.training.__init__": "", "dreamgym.models.__init__": "", "dreamgym.errors": ""}
    sources.update({name.replace("__", "."): text for name, text in modules.items()})
    return sources


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        # upward, at module level and inside a function
        ("dreamgym__errors", "from dreamgym.models.world_model import WorldModel", "upward"),
        ("dreamgym__models__world_model", "def f():\n    from dreamgym.agents.controller import C\n", "upward"),
        # the package root is the top: importing it from below is upward too
        ("dreamgym__agents__controller", "def f():\n    from dreamgym import __version__\n", "upward"),
        # sideways, between the three middle layers
        ("dreamgym__data__policies", "import dreamgym.agents.controller", "sideways"),
        ("dreamgym__training__vae", "from dreamgym.data import storage", "sideways"),
        # relative imports and string entry points count as well
        ("dreamgym__data__collect", "from ..agents import controller", "sideways"),
        ("dreamgym__errors", "LAZY = {'X': 'dreamgym.agents.controller'}", "upward"),
    ],
)
def test_the_check_fails_on_an_import_against_the_layers(module: str, source: str, expected: str) -> None:
    sources = _sources(dreamgym__agents__controller="", dreamgym__models__world_model="", dreamgym__data__storage="")
    sources[module.replace("__", ".")] = source
    problems = violations(sources)
    assert len(problems) == 1 and expected in problems[0], problems


def test_the_check_lets_imports_down_and_within_a_layer_through() -> None:
    sources = _sources(
        dreamgym__agents__controller=(
            "from dreamgym.models.world_model import WorldModel\nfrom dreamgym.errors import E"
        ),
        dreamgym__agents__cmaes="from dreamgym.agents.controller import C\nfrom . import controller",
        dreamgym__models__world_model='"""Loads dreamgym.agents.controller, says the docstring."""',
    )
    assert violations(sources) == []


def test_a_module_in_no_layer_is_reported() -> None:
    expected = ["dreamgym.newthing: in no layer; add it to LAYERS in tests/test_layers.py"]
    assert violations(_sources(dreamgym__newthing="")) == expected
