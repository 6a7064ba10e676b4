"""``python -m sage_resilience``: the same as ``sage-resilience``."""

from __future__ import annotations

import sys

from sage_resilience.cli import main

if __name__ == "__main__":
    sys.exit(main())
