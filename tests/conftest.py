"""Shared fixtures: a synthetic night and a Luigi configuration pointing at a scratch store."""

from __future__ import annotations

import datetime as dt

import luigi.configuration
import pytest

from ztfluigi.sim.schedule import SimConfig

DEMO_DATE = dt.date(2019, 3, 31)


@pytest.fixture(scope="session")
def sim_config() -> SimConfig:
    """The default synthetic instrument, at a small scale for speed."""
    return SimConfig(seed=0, scale=16)


@pytest.fixture()
def luigi_store(tmp_path, monkeypatch):
    """Point ``[ztfluigi] root`` at a fresh directory and use a small synthetic scale."""
    cfg = luigi.configuration.get_config()
    saved = {s: dict(cfg.items(s)) if cfg.has_section(s) else None for s in ("ztfluigi", "sim")}
    for section, values in {
        "ztfluigi": {"root": str(tmp_path / "store"), "archive": "sim"},
        "sim": {"seed": "0", "scale": "16", "n_fields": "1"},
    }.items():
        if not cfg.has_section(section):
            cfg.add_section(section)
        for key, value in values.items():
            cfg.set(section, key, value)
    yield tmp_path / "store"
    for section, values in saved.items():
        cfg.remove_section(section)
        if values is not None:
            cfg.add_section(section)
            for key, value in values.items():
                cfg.set(section, key, value)
