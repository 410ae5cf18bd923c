"""Timestamps on Luigi's worker log lines.

Luigi's default worker logging (``luigi.setup_logging.InterfaceLogging._default``) prints
``LEVEL: message`` without a time, so a night's log cannot tell when a task ran or how long it
waited. A ``[logging]`` section is read only from TOML configurations (``luigi.cfg`` files are
ignored there), and ``[core] logging_conf_file`` replaces the root logger's handlers and makes
``--log-level`` ignored; so :func:`install` keeps Luigi's own set-up and only gives its default
handler a timestamped format. A ``logging_conf_file``, ``--logging-conf-file`` or
``[core] no_configure_logging`` still takes precedence, exactly as in Luigi.
"""

from __future__ import annotations

import logging

#: the format of Luigi's default worker handler (luigi/setup_logging.py)
LUIGI_FORMAT = "%(levelname)s: %(message)s"
#: ztfluigi's: local time with milliseconds, then Luigi's (its worker lines name their pid)
FORMAT = "%(asctime)s %(levelname)s: %(message)s"


def timestamp_handlers(logger_name: str = "luigi-interface") -> int:
    """Give Luigi's default handlers of ``logger_name`` the timestamped :data:`FORMAT`
    (handlers someone else configured are left alone); the number changed."""
    changed = 0
    for handler in logging.getLogger(logger_name).handlers:
        formatter = handler.formatter
        if formatter is not None and getattr(formatter, "_fmt", None) == LUIGI_FORMAT:
            handler.setFormatter(logging.Formatter(FORMAT))
            changed += 1
    return changed


def install() -> None:
    """Make Luigi's default worker logging timestamped from now on (idempotent)."""
    from luigi.setup_logging import InterfaceLogging

    luigi_default = InterfaceLogging.__dict__["_default"].__func__
    if getattr(luigi_default, "ztfluigi_timestamps", False):
        return

    def _default(cls: type, opts: object) -> bool:
        configured = luigi_default(cls, opts)
        timestamp_handlers()
        return configured

    _default.ztfluigi_timestamps = True  # type: ignore[attr-defined]
    InterfaceLogging._default = classmethod(_default)  # type: ignore[method-assign]
    timestamp_handlers()  # logging already set up in this process (e.g. a second build)
