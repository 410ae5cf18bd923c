"""ztfluigi: a declarative build system for the ZTF in2p3 data products, on Luigi and fsspec.

``luigi --module ztfluigi <Task> …`` finds every product task here.
"""

__version__ = "0.1.0"

from ztfluigi import config as _config  # noqa: E402

_config.install_packaged_defaults()  # before any task reads a setting: lowest priority

from ztfluigi import logformat as _logformat  # noqa: E402

_logformat.install()  # worker log lines with timestamps (Luigi's own set-up otherwise)

from ztfluigi.tasks import *  # noqa: E402, F403 - every product task, for `luigi --module`
from ztfluigi.tasks import __all__ as _task_names  # noqa: E402

__all__ = [*_task_names, "__version__"]
