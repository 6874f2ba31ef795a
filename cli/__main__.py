"""``python -m cli``: the ``vybe`` command without the installed entry point."""

from __future__ import annotations

import sys

from cli.main import main

sys.exit(main())
