"""``python -m sage_resilience.cli``: the same as ``sage-resilience``."""

from __future__ import annotations

import sys

from sage_resilience.cli import main

sys.exit(main())
