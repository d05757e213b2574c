"""Where things are in the checkout."""

from __future__ import annotations

from pathlib import Path

# The repository checkout: manage commands, bench/ and chaos/ run from here.
ROOT = Path(__file__).resolve().parent.parent.parent
# The demo project (`make demo`).
PROJECT = ROOT / "testproject"
