"""``python -m ztfluigi.cli``: the same as the ``ztfluigi`` console script."""

import sys

from ztfluigi.cli import main

sys.exit(main())
