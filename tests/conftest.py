"""Shared fixtures: a synthetic night and a Luigi configuration pointing at a scratch store."""

from __future__ import annotations

import pytest

from tests.helpers import luigi_settings
from ztfluigi.sim.schedule import SimConfig


@pytest.fixture(scope="session")
def sim_config() -> SimConfig:
    """The default synthetic instrument, at a small scale for speed."""
    return SimConfig(seed=0, scale=16)


@pytest.fixture()
def luigi_store(tmp_path):
    """Point ``[ztfluigi] root`` at a fresh directory and use a small synthetic scale."""
    with luigi_settings({
        "ztfluigi": {"root": str(tmp_path / "store"), "archive": "sim"},
        "sim": {"seed": "0", "scale": "16", "n_fields": "1"},
    }):  # fmt: skip
        yield tmp_path / "store"
