"""A clock for the engine that moves only when the test says so."""

from __future__ import annotations


class Clock:
    """A clock the test moves by hand; scripts use it instead of the server's."""

    def __init__(self, start_ms: int = 1_800_000_000_000) -> None:
        self.ms = start_ms

    def __call__(self) -> int:
        return self.ms

    def advance(self, seconds: float) -> None:
        self.ms += int(seconds * 1000)
