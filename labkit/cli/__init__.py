"""The command line: ``labkit`` (click groups by command family)."""
from labkit.cli.main import main

__all__ = ["main"]
