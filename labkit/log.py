"""Progress callbacks: library code says what it does through a ``log`` callable and never
prints by default; the CLI passes its own writer."""
from __future__ import annotations

from collections.abc import Callable

Log = Callable[[str], None]


def quiet(_msg: str) -> None:
    """The default ``log``: says nothing."""
