"""The benchmark's own venv, .venv/bench: this project plus the peers (the
``bench`` extra), made on first use and remade when pyproject.toml changes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv" / "bench"
STAMP = VENV / ".bench-stamp"


def _python() -> Path:
    return VENV / "bin" / "python"


def _wanted() -> str:
    text = (REPO / "pyproject.toml").read_bytes()
    return f"{hashlib.sha256(text).hexdigest()} {sys.version.split()[0]}"


def inside() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def ensure() -> Path:
    """Make (or refresh) the venv; return its python."""
    want = _wanted()
    if _python().exists() and STAMP.exists() and STAMP.read_text() == want:
        return _python()
    print(f"==> setting up {VENV.relative_to(REPO)} (this project + the `bench` extra)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    pip = [str(_python()), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*pip, "-e", f"{REPO}[bench]"], check=True, cwd=REPO)
    STAMP.write_text(want)
    return _python()


def reexec(argv: list[str]) -> None:
    """Run ``python -m bench argv`` again inside the venv (never returns)."""
    python = ensure()
    os.chdir(REPO)
    os.execv(str(python), [str(python), "-m", "bench", *argv])
