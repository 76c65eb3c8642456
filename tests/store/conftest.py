"""Fixtures for the store tests: a real influxd (tests/conftest.py), and real signed blocks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.store.chains import GatewayChain

# influxd, v1_store and require_binary come from tests/conftest.py


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    """A key directory: each :class:`GatewayChain` puts its gateway's key pair here."""
    path = tmp_path / "keys"
    path.mkdir()
    return path


@pytest.fixture
def chain(keydir: Path) -> GatewayChain:
    """Gateway ``gw-1``'s chain, signed with an Ed25519 key in ``keydir``."""
    return GatewayChain("gw-1", keydir)
