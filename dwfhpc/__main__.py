"""``python -m dwfhpc``: the same as the ``dwfhpc`` command."""

import sys

from .cli import main

sys.exit(main())
