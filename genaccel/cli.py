"""``genaccel`` command line: the composition root (imports pipelines and services lazily).
Each command lives in ``genaccel/commands/``; importing them registers them on the app.

User mistakes print one line ``genaccel: error: ...`` on stderr and exit 2; no traceback.
"""

from __future__ import annotations

import sys

import click

from genaccel.commands import catalogue, jobs, render, server, tools  # noqa: F401  (registers the commands)
from genaccel.commands.common import _err, app, parse_technique_option
from genaccel.errors import GenAccelError

__all__ = ["app", "main", "parse_technique_option"]


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the app and turns errors into one line and an exit code."""
    try:
        code = app(args=argv, standalone_mode=False)
    except GenAccelError as exc:
        _err(f"genaccel: error: {exc.message}")
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        _err("genaccel: aborted")
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
