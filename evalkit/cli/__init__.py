"""The `evalkit` command (`evalkit.cli:main`)."""

from evalkit.cli.app import main

__all__ = ["main"]
