"""The fast unit layer: domain logic and servicers in this process, no PostgreSQL, no service processes,
no network. The project conftest starts an embedded PostgreSQL for every session (autouse); the fixture
of the same name below overrides it for everything under tests/unit, so a unit run starts nothing, and a
guard makes any attempt to start a process fail the test that tried."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

UNIT_DIR = Path(__file__).resolve().parent
UNIT_TEST_TIMEOUT_SECONDS = 30  # a hang guard, not a timing assertion: the whole layer takes seconds


@pytest.fixture(scope="session", autouse=True)
def postgres_server():
    """Overrides tests/conftest.py's server: the unit layer must not start a database."""
    return None


class _NoProcesses(subprocess.Popen):
    def __init__(self, args, *rest, **kwargs):
        raise AssertionError(f"a unit test tried to start a process ({args!r}): that belongs in the "
                             "integration layer (tests/*.py), not tests/unit")


@pytest.fixture(autouse=True)
def no_processes(monkeypatch):
    # Per test, not per session: a run that mixes layers must get Popen back for the integration tests.
    monkeypatch.setattr(subprocess, "Popen", _NoProcesses)


def pytest_collection_modifyitems(items):
    for item in items:
        if UNIT_DIR in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.timeout(UNIT_TEST_TIMEOUT_SECONDS))
