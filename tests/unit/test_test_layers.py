"""The unit layer needs no browser and no server: checked in subprocesses.

``scripts/test --fast`` runs all of tests/unit this way (Playwright blocked,
``TMS_TEST_NO_SERVERS=1``); these tests keep the two switches themselves honest.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.servers import NO_SERVERS

REPO = Path(__file__).resolve().parents[2]
PLUGINS = ["tests.conftest", "tests.fixtures.browser", "tests.fixtures.console"]


@pytest.fixture
def without_playwright(tmp_path: Path) -> dict[str, str]:
    """An environment in which ``import playwright`` raises ImportError, servers forbidden."""
    blocked = tmp_path / "blocked" / "playwright"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text('raise ImportError("playwright is blocked")\n')
    return {**os.environ, "PYTHONPATH": str(blocked.parent), NO_SERVERS: "1"}


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_blocker_blocks_playwright(without_playwright: dict[str, str]) -> None:
    result = run(["-c", "import playwright.sync_api"], without_playwright)
    assert result.returncode != 0
    assert "playwright is blocked" in result.stderr


def test_every_fixture_plugin_loads_without_playwright(without_playwright: dict[str, str]) -> None:
    imports = "; ".join(f"import {name}" for name in PLUGINS)
    check = f"{imports}; import tests.conftest as c; [__import__(p) for p in c.pytest_plugins]"
    result = run(["-c", check], without_playwright)
    assert result.returncode == 0, result.stderr


def test_server_fixtures_fail_loudly_when_servers_are_forbidden(
    tmp_path: Path, without_playwright: dict[str, str]
) -> None:
    (tmp_path / "test_wants_servers.py").write_text(
        "from tests.fixtures.broker import running_broker\n"
        "def test_database(database_url): pass\n"
        "def test_browser(chromium): pass\n"
        "def test_broker():\n"
        "    with running_broker('mosquitto', 'postgresql://nowhere/none'): pass\n"
    )
    plugins = ["-p", "tests.fixtures.postgres", "-p", "tests.fixtures.browser"]
    result = run(
        ["-m", "pytest", *plugins, "-p", "no:cacheprovider", "-q", str(tmp_path)],
        without_playwright,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    for wanted in ("PostgreSQL", "Chromium", "a mosquitto broker"):
        assert f"{NO_SERVERS} is set, and this test asked for {wanted}" in result.stdout
    assert "1 failed, 2 errors" in result.stdout, result.stdout


def test_no_test_writes_to_a_fixed_path_under_tmp() -> None:
    """Fixed /tmp paths collide between runs and users: tests use tmp_path or mkdtemp."""
    fixed = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        if path == Path(__file__).resolve():
            continue  # this file names the paths it looks for
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and (node.value == "/tmp" or node.value.startswith("/tmp/"))
            ):
                fixed.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert fixed == []
