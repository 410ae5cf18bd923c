"""Settings checked before anything runs: unknown keys, impossible values, unusable stores.

A typo in luigi.cfg (``roott = …``) would otherwise be ignored and the build would run with the
defaults; a bad value (``scale = 0``, ``root = foo://x``, a read-only root) would fail inside the
first task after a long traceback. :func:`check` finds every such problem from the parsed
sections, in one pass, and :class:`SettingsError` carries them as one line. Pure: the caller
(:mod:`ztfluigi.config`) hands over the raw sections and the known keys.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from collections.abc import Iterable, Mapping

import fsspec
from fsspec.core import split_protocol

ARCHIVES = ("sim", "irsa", "none")
_HTTP = re.compile(r"^https?://[^/\s:]+(:\d+)?/?$")


class SettingsError(ValueError):
    """luigi.cfg settings that cannot work; the message names each key, on one line."""


def unknown_keys(section: str, given: Iterable[str], known: Iterable[str]) -> list[str]:
    """Problems for keys of ``section`` that no parameter reads, with the nearest known key."""
    known = sorted(set(known) | {k.replace("_", "-") for k in known})
    problems = []
    for key in given:
        if key in known:
            continue
        near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f" (did you mean {near[0]!r}?)" if near else f" (known: {', '.join(known)})"
        problems.append(f"[{section}] unknown key {key!r}{hint}")
    return problems


def writable(path: str) -> bool:
    """Whether a local path can be created and written: its nearest existing parent is a
    directory this user may write, with a write permission bit (a tree chmod'ed read-only is
    meant so, even for root, whom the bits do not stop)."""
    path = os.path.abspath(os.path.expanduser(path))
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    write_bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK) and bool(mode & write_bits)


def store_problems(key: str, url: str, must_write: bool = True) -> list[str]:
    """Whether a store URL has a known protocol and, when local, can be written."""
    if not url:
        return []
    protocol = split_protocol(url)[0]
    if protocol is not None:
        try:
            fsspec.get_filesystem_class(protocol)
        except (ValueError, ImportError) as exc:
            return [f"[ztfluigi] {key} = {url}: unknown storage protocol {protocol!r} ({exc})"]
    if must_write and protocol in (None, "file", "local") and not writable(url.split("://")[-1]):
        return [f"[ztfluigi] {key} = {url}: not writable"]
    return []


def archive_problems(value: str) -> list[str]:
    if value in ARCHIVES or _HTTP.match(value):
        return []
    return [f"[ztfluigi] archive = {value!r}: expected sim, irsa, none or http(s)://host[:port]"]


def int_problem(section: str, key: str, raw: str | None, low: int, high: int | None) -> list[str]:
    """A whole number within [low, high] (``raw`` None: the default, fine)."""
    if raw is None:
        return []
    try:
        value = int(str(raw).strip())
    except ValueError:
        return [f"[{section}] {key} = {raw!r}: not a whole number"]
    if value < low or (high is not None and value > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        return [f"[{section}] {key} = {value}: must be in {bounds}"]
    return []


def choice_problems(
    section: str, values: Mapping[str, str], choices: Mapping[str, Iterable[str]]
) -> list[str]:
    """Keys of ``section`` whose value is not one of their ``choices`` (key → allowed)."""
    problems = []
    for key, allowed in choices.items():
        raw = values.get(key, values.get(key.replace("_", "-")))
        if raw is not None and raw.strip() not in allowed:
            problems.append(f"[{section}] {key} = {raw!r}: expected {' | '.join(allowed)}")
    return problems


def check(
    sections: Mapping[str, Mapping[str, str]],
    known: Mapping[str, Iterable[str]],
    choices: Mapping[str, Mapping[str, Iterable[str]]] | None = None,
) -> None:
    """Every problem of the ``[ztfluigi]``, ``[sim]`` and ``[s3]`` sections, raised as one
    :class:`SettingsError` (nothing is done when there is none). ``choices``: per section, the
    keys that take one of a few values."""
    problems: list[str] = []
    for name, keys in known.items():
        problems += unknown_keys(name, sections.get(name, {}), keys)
    for name, by_key in (choices or {}).items():
        problems += choice_problems(name, sections.get(name, {}), by_key)
    z = sections.get("ztfluigi", {})
    root = z.get("root", "ztfdata")
    problems += store_problems("root", root)
    for key in ("raw_root", "cal_root", "catalog_root"):
        for spelling in (key, key.replace("_", "-")):
            if spelling in z:
                problems += store_problems(key, z[spelling], must_write=key != "raw_root")
    problems += archive_problems(z.get("archive", "sim"))
    problems += int_problem("ztfluigi", "calib_window", z.get("calib_window"), 0, 366)
    window = z.get("fringe_window", z.get("fringe-window"))
    problems += int_problem("ztfluigi", "fringe_window", window, 1, 366)
    s = sections.get("sim", {})
    problems += int_problem("sim", "seed", s.get("seed"), 0, None)
    problems += int_problem("sim", "scale", s.get("scale"), 1, 96)
    problems += int_problem("sim", "n_fields", s.get("n_fields", s.get("n-fields")), 0, 500)
    if problems:
        raise SettingsError("; ".join(problems))
