"""The unit layer's own promise: no database, no process."""

from __future__ import annotations

import asyncio
import subprocess

import pytest


def test_a_unit_test_cannot_start_a_process():
    with pytest.raises(AssertionError, match="integration layer"):
        subprocess.run(["true"], check=False)


async def test_nor_an_asyncio_subprocess():
    with pytest.raises(AssertionError, match="integration layer"):
        await asyncio.create_subprocess_exec("true")


def test_the_unit_layer_asks_for_no_database(postgres_server):
    # tests/conftest.py's session server (autouse) is overridden here by one that starts nothing.
    assert postgres_server is None
