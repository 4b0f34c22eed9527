"""The real agent never imports its simulator: only the composition root, agent/cli.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parents[2] / "agent"
# The command line builds a simulated terminal for `tms simulate` and `--simulated-device`.
COMPOSITION_ROOT = AGENT / "cli.py"


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of its code (function-level too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


AGENT_MODULES = sorted(
    path for path in AGENT.glob("*.py") if path != COMPOSITION_ROOT and path.name != "__init__.py"
)


def test_the_agent_has_modules_to_check() -> None:
    assert {"runtime.py", "terminal.py", "usb_driver.py"} <= {p.name for p in AGENT_MODULES}


@pytest.mark.parametrize("path", AGENT_MODULES, ids=lambda path: path.name)
def test_agent_module_does_not_import_the_simulator(path: Path) -> None:
    simulator = sorted(
        name
        for name in imported_modules(path)
        if name == "agent.sim" or name.startswith("agent.sim.")
    )
    assert not simulator, f"agent/{path.name} imports the simulator: {simulator}"
