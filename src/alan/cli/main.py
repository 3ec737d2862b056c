"""The `alan` command: a thin typer layer over the Python API.

Each command group lives in its own module with a ``register(app)`` function.
Any `AlanError` becomes one line on stderr and exit code 2, with no traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console
from rich.markup import escape

from alan.errors import AlanError

app = typer.Typer(
    name="alan",
    help="Label-efficient cardiac image analysis: ALAN parcels and SSCL with anatomic priors.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

GROUPS = (
    "synth", "data", "backbone", "probe", "dino", "raptor", "parcels",
    "segment", "views", "analyze", "reproduce", "sscl", "demo",
    "pick",
)
for _name in GROUPS:
    importlib.import_module(f"alan.cli.{_name}").register(app)

err = Console(stderr=True, highlight=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("alan")
        except PackageNotFoundError:
            from alan import __version__ as text
        typer.echo(f"alan {text}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Label-efficient cardiac image analysis: ALAN parcels and SSCL with anatomic priors.

    Example:

        alan synth echonet data/echonet --size small && alan data inspect data/echonet
    """


def quiet_libraries() -> None:
    """Silence library chatter that says nothing to a user of this CLI (tips, deprecations inside
    Lightning, batch-count notes); real warnings and errors still show."""
    import logging
    import warnings

    for pattern in (".*LeafSpec.*", ".*number of training batches.*", ".*module\\(s\\) in eval mode.*",
                    ".*does not have many workers.*"):
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)


def one_line_data_warnings() -> None:
    """A `DataWarning` is shown as one ``warning: FILE: problem`` line (no source location)."""
    import warnings

    from alan.errors import DataWarning

    plain = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DataWarning):
            err.print(f"[bold yellow]warning:[/] {escape(str(message))}", markup=True)
        else:
            plain(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def main() -> None:
    """Run the CLI: an `AlanError` or a bad option value is one line on stderr and exit code 2."""
    from typer.core import _click  # the click that typer bundles

    quiet_libraries()
    one_line_data_warnings()
    try:
        code = app(standalone_mode=False)
    except _click.exceptions.NoArgsIsHelpError as e:  # a group without its command: show its help
        from typer import rich_utils

        rich_utils.rich_format_error(e)
        sys.exit(e.exit_code)
    except _click.exceptions.ClickException as e:
        where = f" (see `{e.ctx.command_path} --help`)" if getattr(e, "ctx", None) is not None else ""
        err.print(f"[bold red]error:[/] {escape(e.format_message())}{escape(where)}", markup=True)
        sys.exit(e.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(1)
    except AlanError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", markup=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
