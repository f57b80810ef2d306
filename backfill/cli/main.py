"""``backfill``: parse arguments, dispatch, and turn errors into one line and an exit code.

Subcommands are loaded lazily so ``backfill --help`` never imports the Azure SDK, SQLAlchemy or
pyodbc. Every command module exposes one click command or group named in ``COMMANDS``.
"""

from __future__ import annotations

import gc
import importlib
import os
import shlex
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from backfill.errors import BackfillError, ExitCode
from backfill.gcpause import paused_gc

# name -> (module, attribute, one-line help shown by --help without importing the module)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("backfill.cli.demo", "demo", "The whole story on the emulator, in a temporary folder."),
    "plan": ("backfill.cli.plan", "plan", "Check a plan and print its windows, or the plan schema."),
    "history": ("backfill.cli.history", "history", "Fetch and cache a pipeline's run history."),
    "preview": ("backfill.cli.preview", "preview", "What would happen to every window of a plan, and why."),
    "request": ("backfill.cli.approvals", "request", "Freeze a plan and its preview for approval."),
    "approve": ("backfill.cli.approvals", "approve", "Approve a backfill, a canary pause or a blocked window."),
    "reject": ("backfill.cli.approvals", "reject", "Reject a backfill."),
    "run": ("backfill.cli.execute", "run", "Execute an approved backfill (resumable)."),
    "stop": ("backfill.cli.execute", "stop", "Stop a backfill after the window in flight."),
    "status": ("backfill.cli.status", "status", "A backfill's state and each window's."),
    "runs": ("backfill.cli.runs", "runs", "List, show, export and cancel pipeline runs."),
    "incident": ("backfill.cli.incident", "incident", "The incident record of a run, and whether it is resolved."),
    "ledger": ("backfill.cli.ledger", "ledger", "Show, verify, checkpoint and export the ledger."),
    "report": ("backfill.cli.report", "report", "Evidence report for a backfill."),
    "sla": ("backfill.cli.sla", "sla", "SLA and duration-drift evidence per business date."),
    "emulator": ("backfill.cli.emulator", "emulator", "Run the local ADF emulator."),
    "serve": ("backfill.cli.serve", "serve", "The supervisors' console in a browser."),
}


# Set by ``main()``, the process's entry point, not by ``run()``, which tests and the demo call
# many times in one process: see ``LazyGroup.get_command``.
_FREEZE_IMPORTS = False


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = COMMANDS.get(cmd_name)
        if spec is None:
            return None
        module_name, attribute, _ = spec
        # Webhooks hear of the ledger events a command writes (issue 15); installed only once a
        # command is chosen, so ``backfill --help`` imports nothing more.
        # Imports build long-lived objects only (modules, classes, functions): with the cyclic
        # collector paused they cost a command's start-up a tenth less (issue 14). Frozen
        # afterwards (the entry point only), the first collections after the pause do not walk
        # every object the imports made (SQLAlchemy's, mostly) twice over: 55 ms of a 0.3 s
        # ``status``.
        with paused_gc(freeze=_FREEZE_IMPORTS):
            from backfill.notify.deliver import install_from_env

            install_from_env()
            command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="backfill")
def cli() -> None:
    """Guarded reruns and backfills for Azure Data Factory pipelines.

    Settings: BACKFILL_ADF_ENDPOINT, BACKFILL_ADF_CA_BUNDLE, BACKFILL_ADF_TOKEN (the factory),
    AZURE_SUBSCRIPTION_ID, BACKFILL_RESOURCE_GROUP, BACKFILL_FACTORY (commands without a plan),
    BACKFILL_LEDGER (the ledger database URL), BACKFILL_ACTOR (declared identity).
    """


def debug_log_path() -> Path:
    """Where unexpected errors are logged: ``BACKFILL_DEBUG_LOG``, else the per-user state folder
    (``$XDG_STATE_HOME/backfill/debug.log``, ``~/.local/state/backfill/debug.log``)."""
    explicit = os.environ.get("BACKFILL_DEBUG_LOG", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    state = os.environ.get("XDG_STATE_HOME", "").strip()
    base = Path(state) if state and Path(state).is_absolute() else Path.home() / ".local" / "state"
    return base / "backfill" / "debug.log"


def _log_traceback(args: list[str]) -> str:
    """Append the traceback with its time, version and command line; say where, or why not."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("backfill")
    except PackageNotFoundError:
        release = "unknown"
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    entry = f"--- {stamp} backfill {release}: {shlex.join(['backfill', *args])}\n{traceback.format_exc()}\n"
    path = debug_log_path()
    try:
        # Tracebacks may quote paths and messages: the folder and the file are the user's alone.
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(descriptor, "a", encoding="utf-8", errors="backslashreplace") as log:
            log.write(entry)
    except Exception as exc:  # the log is a courtesy: failing to write it must not hide the error
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return f"traceback not written: cannot write {path}: {reason}; set BACKFILL_DEBUG_LOG"
    return f"traceback in {path}"


def run(args: list[str] | None = None, **extra: Any) -> int:
    """Run the CLI and return its exit code (the single error handler of the program)."""
    try:
        # Without standalone mode click returns, not raises, the code of an Exit (exit_with).
        result = cli.main(args=args, standalone_mode=False, **extra)
    except BackfillError as exc:
        click.echo(f"{exc.label}: {exc}" if exc.label else str(exc), err=True)
        return int(exc.exit_code)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return int(ExitCode.USAGE) if isinstance(exc, click.UsageError) else exc.exit_code
    except click.Abort:
        click.echo("interrupted", err=True)
        return int(ExitCode.INTERRUPTED)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:
        where = _log_traceback(sys.argv[1:] if args is None else list(args))
        message = " ".join(str(exc).split())
        click.echo(f"error: unexpected {type(exc).__name__}: {message} ({where})", err=True)
        return int(ExitCode.BUG)
    if isinstance(result, int) and not isinstance(result, bool):
        return result
    return int(ExitCode.OK)


def main() -> None:
    global _FREEZE_IMPORTS
    _FREEZE_IMPORTS = True
    code = run()
    # The command is done (its atexit work, such as draining notifications, still runs first).
    # Frozen, the objects it leaves are not walked again by the collections of the interpreter's
    # shutdown, which cost a large preview a fifth of its time (0.4 s for 35,040 windows);
    # the process exits, and the operating system reclaims the memory at once.
    gc.freeze()
    sys.exit(code)
