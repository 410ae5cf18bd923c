"""Shared fixtures: a synthetic night and a Luigi configuration pointing at a scratch store."""

from __future__ import annotations

import contextlib
import datetime as dt

import luigi.configuration
import pytest

from ztfluigi.sim.schedule import SimConfig

DEMO_DATE = dt.date(2019, 3, 31)


@pytest.fixture(scope="session")
def sim_config() -> SimConfig:
    """The default synthetic instrument, at a small scale for speed."""
    return SimConfig(seed=0, scale=16)


@contextlib.contextmanager
def luigi_settings(settings: dict[str, dict[str, str]]):
    """Temporarily set luigi.cfg keys (sections restored on exit)."""
    cfg = luigi.configuration.get_config()
    saved = {s: dict(cfg.items(s)) if cfg.has_section(s) else None for s in settings}
    for section, values in settings.items():
        if not cfg.has_section(section):
            cfg.add_section(section)
        for key, value in values.items():
            cfg.set(section, key, value)
    try:
        yield cfg
    finally:
        for section, values in saved.items():
            cfg.remove_section(section)
            if values is not None:
                cfg.add_section(section)
                for key, value in values.items():
                    cfg.set(section, key, value)


@pytest.fixture()
def luigi_store(tmp_path):
    """Point ``[ztfluigi] root`` at a fresh directory and use a small synthetic scale."""
    with luigi_settings({
        "ztfluigi": {"root": str(tmp_path / "store"), "archive": "sim"},
        "sim": {"seed": "0", "scale": "16", "n_fields": "1"},
    }):  # fmt: skip
        yield tmp_path / "store"
