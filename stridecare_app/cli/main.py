"""The ``stridecare`` command line: one entry point for runners and operators.

Every command takes its settings from ``STRIDECARE_*`` variables, or from the file named by ``--config``.
The application object and what commands share live in ``stridecare_app.cli.app``; each command group lives in a
module of its own, imported only when one of its commands runs (``commands.py`` lists them).
"""

from __future__ import annotations

from stridecare_app.cli import collector
from stridecare_app.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    collector.hold()
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
