"""``python -m hamflow ...``: the same command as the ``hamflow`` console script."""

from __future__ import annotations

import sys

from hamflow.cli import main

if __name__ == "__main__":
    sys.exit(main())
