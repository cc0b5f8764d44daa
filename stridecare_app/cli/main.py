"""The ``stridecare`` command line: one entry point for runners and operators.

Every command takes its settings from ``STRIDECARE_*`` variables, or from the file named by ``--config``.
The application object and what commands share live in ``stridecare_app.cli.app``; each command group lives in a
module of its own, and importing it here attaches its commands to ``app``.
"""

from __future__ import annotations

from stridecare_app.cli.app import app

# Bound first, so that a command module importing ``app`` from here by mistake fails the import test, not the CLI.
# isort: split
from stridecare_app.cli import (  # noqa: F401  (imported for their commands)
    admin_cmds,
    athletes,
    config_cmds,
    connector_cmds,
    data_cmds,
    digest_cmds,
    feel_cmds,
    health_cmd,
    ingest_cmds,
    operate,
    prompts_cmds,
    shoe_cmds,
    strava_cmds,
)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
