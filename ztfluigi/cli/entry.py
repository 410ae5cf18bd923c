"""The entry task of ``ztfluigi status``/``clean``, written as on the ``luigi`` command line."""

from __future__ import annotations

import luigi
from luigi.cmdline_parser import CmdlineParser
from luigi.parameter import MissingParameterException, ParameterException
from luigi.task_register import TaskClassException


def entry_task(words: list[str]) -> luigi.Task:
    """``["ApertureCatalog", "--date", "2019-03-31"]`` → the task (ValueError: one-line reason)."""
    import ztfluigi.tasks  # noqa: F401 - registers the task families

    if not words or words[0].startswith("-"):
        raise ValueError("name the entry task, e.g. ApertureCatalog --date 2019-03-31")
    try:
        with CmdlineParser.global_instance(list(words)) as parser:
            return parser.get_task_obj()
    except (TaskClassException, MissingParameterException, ParameterException) as exc:
        raise ValueError(" ".join(str(exc).split())) from None
    except SystemExit:  # argparse's own message is already printed
        raise ValueError(f"cannot parse the task {' '.join(words)!r}") from None
