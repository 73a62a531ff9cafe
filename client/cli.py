"""The ``autoresearch`` command line (typer + rich).

Each command group lives in ``client/commands/<group>.py`` and exposes ``register(app)``. Only
:func:`main` catches the base errors: one line plus ``hint: …``; ``--verbose`` shows the traceback
(never with locals: the process holds an API key and a private key). A file error no module turned
into a :class:`~autoresearch.client.errors.StateFileError` (an ``OSError``: permissions, a full disk)
is reported the same way, naming the file. Every log line passes through
:class:`~autoresearch.client.safetext.SafeLogFilter`.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

import typer
import typer.core

from autoresearch.protocol import ProtocolError

from . import console
from .commands import calibrate, demo, federation, keys, mcp, records, trainer, workspace
from .errors import ClientError, UsageError
from .safetext import SafeLogFilter

_display_type_rich = typer.core.TyperOption.display_type_rich


def _no_flag_placeholder(self: typer.core.TyperOption, ctx: Any) -> str | None:  # ctx: click.Context (vendored in typer 0.29)
    """``--help`` shows no ``<bool>`` after an on/off flag (typer ≥ 0.2x prints one): a flag takes no value."""
    if self.is_bool_flag:
        return None
    return _display_type_rich(self, ctx)


typer.core.TyperOption.display_type_rich = _no_flag_placeholder  # type: ignore[method-assign]

app = typer.Typer(
    name="autoresearch",
    help=(
        "Federated autonomous ML research: an agent edits train.py, trains for a fixed time budget, "
        "keeps what lowers val_bpb, and publishes signed, calibrated results to a hub.\n\n"
        "Start with `autoresearch demo` (a local hub plus two volunteers on the CPU track)."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
    add_completion=False,
)


def package_version() -> str:
    """The installed distribution's version (``autoresearch-hub``)."""
    try:
        return version("autoresearch-hub")
    except PackageNotFoundError:  # running from a source tree without install
        return "0+unknown"


def _version_callback(value: bool) -> None:
    if value:
        console.out().print(f"autoresearch {package_version()}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version_: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", envvar="AUTORESEARCH_VERBOSE", help="Debug logs and tracebacks.")
    ] = False,
) -> None:
    if verbose:
        os.environ["AUTORESEARCH_VERBOSE"] = "1"
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:  # text from hubs is quoted in log lines
        if not any(isinstance(f, SafeLogFilter) for f in handler.filters):
            handler.addFilter(SafeLogFilter())
    if not verbose:  # one line per HTTP request is noise next to the loop's own progress lines
        logging.getLogger("httpx").setLevel(logging.WARNING)


for _module in (keys, records, trainer, workspace, calibrate, federation, demo, mcp):
    _module.register(app)


def _mount_hub(app: typer.Typer) -> None:
    """``autoresearch hub …`` is the hub package's command group (``autoresearch.hub.cli``), mounted
    when the ``hub`` extra is installed; without it, ``hub`` only says how to install it."""
    import importlib.util

    missing = [m for m in ("fastapi", "sqlalchemy", "alembic", "uvicorn") if importlib.util.find_spec(m) is None]
    if not missing:
        from autoresearch.hub.cli import register

        register(app)
        return

    @app.command("hub", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)
    def hub_missing() -> None:
        """Run and administer a hub (needs the `hub` extra)."""
        raise UsageError(f"the hub is not installed ({', '.join(missing)} missing)", hint="pip install 'autoresearch-hub[hub]'")


_mount_hub(app)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM unwinds like an exception, so ``finally`` blocks run (``run_training`` then kills its
    harness process group instead of leaving it training as an orphan)."""
    raise SystemExit(128 + signum)


def main() -> None:
    """Entry point: run the app, turning our errors into one line plus a hint and exit code 1."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        code = app(standalone_mode=False)
        # Without standalone mode click *returns* the code of a `typer.Exit(n)` raised by a command
        # instead of exiting with it; exit with it here or every failure would look like success.
        if isinstance(code, int) and code != 0:
            sys.exit(code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        console.error("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        console.error("interrupted")
        sys.exit(130)
    except (ClientError, ProtocolError) as exc:
        if os.environ.get("AUTORESEARCH_VERBOSE"):
            console.err().print_exception(show_locals=False)
        console.error(str(exc), getattr(exc, "hint", None))
        sys.exit(1)
    except OSError as exc:  # a file error no module anticipated: still one line naming the file
        if os.environ.get("AUTORESEARCH_VERBOSE"):
            console.err().print_exception(show_locals=False)
        where = exc.filename if exc.filename is not None else "a file"
        console.error(
            f"{where}: {exc.strerror or exc}",
            "check that the file and its folder exist and are writable by this user (and the disk is not full)",
        )
        sys.exit(1)
    except Exception as exc:  # click usage errors carry their own exit codes
        if isinstance(exc, _usage_errors()):
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        raise


def _usage_errors() -> tuple[type[Exception], ...]:
    """Click's usage-error base class(es): typer ≥ 0.29 vendors click as ``typer._click`` (a bad option
    value raises that one), older typer raises click's own."""
    import importlib

    found: list[type[Exception]] = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(importlib.import_module(module).ClickException)
        except ImportError:
            continue
    return tuple(found)
