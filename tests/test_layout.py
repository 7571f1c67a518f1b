"""The architecture's rules, held in the code's own imports (docs/architecture.md, "Rules the imports keep").

Every import statement counts, a lazy one inside a function too: each runs in the process that reaches it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APP = ("core", "desktop")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for top in APP for path in (ROOT / top).rglob("*.py")}


def imported(module: str, typing: bool = True) -> set[str]:
    """The modules one module's import statements name (for `from core.x import y`, core.x.y if that is a
    module, else core.x); without `typing`, not those under `if TYPE_CHECKING:`, which never run."""
    names = set()
    tree = ast.parse(MODULES[module].read_text())
    for node in ast.walk(tree):
        if not typing and isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                names.add(child if child in MODULES else node.module)
    return names


def reached(start: str, typing: bool = True) -> set[str]:
    """Every module of core and desktop that importing `start` can import, and the outside packages they name
    (`typing`: as imported)."""
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for name in imported(module, typing) if module in MODULES else ():
            # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
            parts = name.split(".")
            todo += [".".join(parts[:n]) for n in range(1, len(parts) + 1)]
    return seen


def test_the_rules_see_the_imports():
    assert "core.jobdir.events" in reached("core.jobs.jobs")
    assert "torch" in reached("core.engine.train")
    assert "PySide6" in {name.split(".")[0] for name in imported("desktop.window")}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("core")))
def test_core_never_imports_qt(module):
    assert not {name for name in imported(module) if name.split(".")[0] in ("PySide6", "shiboken6", "desktop")}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.startswith("core.engine")))
def test_the_engine_is_only_ever_a_process(module):
    """Outside core/engine the engine is started by module name (`python -m core.engine...`), never
    imported: what the app shares with it lives in core/jobdir/ and other standard-library modules."""
    assert not {name for name in imported(module) if name.startswith("core.engine")}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("core.engine")))
def test_the_engine_never_reaches_the_library_database(module):
    """The engine reads the job directory only: it runs where the library is not (a remote host)."""
    assert not reached(module) & {"core.db", "core.library.store", "sqlite_utils", "sqlite3"}


# docs/architecture.md, "Rules the imports keep": what the engine may reach of core, all of it uploaded to a
# remote host with the engine.
ENGINE_MAY_REACH = {
    "core",
    "core.errors",
    "core.lifetime",
    "core.versions",
    "core.sizes",
    "core.progress",
    "core.llamacpp",
    "core.answers",
    "core.answers.citations",
    "core.answers.form",
    "core.answers.scoring",
    "core.library",
    "core.library.chunking",
}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("core.engine")))
def test_the_engine_reaches_only_its_allow_list(module):
    outside = {m for m in reached(module) if m in MODULES and not m.startswith(("core.engine", "core.jobdir"))}
    assert outside <= ENGINE_MAY_REACH, f"{module} reaches {sorted(outside - ENGINE_MAY_REACH)}"


# The engine's recipe and its score tool: the recipe scores each checkpoint as it saves it, and the tool
# loads the model as the recipe does. Every other circle is a name one floor too high.
ALLOWED_CIRCLE = {"core.engine.train", "core.engine.score"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_reaches_itself_through_others(module):
    """As the imports run: one under `if TYPE_CHECKING:` (a view naming the window's type) makes no circle."""
    first = {name for name in imported(module, typing=False) if name in MODULES and name != module}
    back = {name for name in first if module in reached(name, typing=False)}
    if module in ALLOWED_CIRCLE:
        back -= ALLOWED_CIRCLE
    assert not back, f"{module} and {sorted(back)} import each other"


def _message_texts(module: str) -> list[str]:
    """The literal text of every error raised with a message in the module: the first argument of a call of a
    class named ...Error, f-strings' literal parts included (keyword arguments, the remedies, left out)."""
    texts = []
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Call) and node.args and ast.unparse(node.func).endswith("Error"):
            texts += [
                n.value for n in ast.walk(node.args[0]) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            ]
    return texts


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("core") and not m.startswith("core.cli")))
def test_core_messages_name_no_command_line_outside_their_remedy(module):
    """A remedy is a KnownError's `cli` or `app` (core/errors.py), so that the window never sends its user to a
    command, nor the CLI to a button. A pip command, the same for both, may stay in the message."""
    command_line = re.compile(r"`tunedesk\b|(^|\s)--[a-z]")
    said = [text for text in _message_texts(module) if command_line.search(text) and "pip install" not in text]
    assert not said, f"{module}: {said}"
