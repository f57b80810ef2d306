"""The README documents every setting the package reads, every command and every exit code.

Like datasette's documentation tests: the lists are taken from the code (the ``BACKFILL_*`` names in
``backfill/``'s source, the click group with its subcommands, ``ExitCode``), so a new setting,
command or code that the README does not mention fails here, not in an operator's hands.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from backfill.cli.main import cli
from backfill.errors import ExitCode

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
SETTING = re.compile(r"BACKFILL_[A-Z0-9_]*[A-Z0-9]")  # a prefix (BACKFILL_PARAM_) is no setting


def _settings() -> set[str]:
    """Every ``BACKFILL_*`` string in the package's source except where it is only set for a child
    (the command check's ``env["BACKFILL_WINDOW_START"] = ...``): a read, not a write."""
    found: set[str] = set()
    for path in (REPO / "backfill").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        written = {
            id(node.slice)
            for node in ast.walk(tree)
            if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store)
        }
        found |= {
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and SETTING.fullmatch(node.value)
            and id(node) not in written
        }
    return found


def _commands(group: click.Group, ctx: click.Context, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        if isinstance(command, click.Group):
            yield from _commands(command, click.Context(command, parent=ctx, info_name=name), (*prefix, name))
        else:
            yield (*prefix, name)


def _documented(path: tuple[str, ...]) -> bool:
    """A code span of the README spells the command: ``backfill ledger show|verify`` covers both,
    ``plan schema`` (after ``backfill plan check``) too."""
    for span in re.findall(r"`([^`\n]+)`", README):
        words = [set(word.split("\\|")) for word in span.split()]
        if words and words[0] == {"backfill"}:
            words = words[1:]
        if len(words) >= len(path) and all(name in word for name, word in zip(path, words, strict=False)):
            return True
    return False


def test_the_lists_are_taken_from_the_code() -> None:
    # The walks themselves see what they must, or every check below would pass on nothing.
    assert {"BACKFILL_LEDGER", "BACKFILL_ACTOR", "BACKFILL_DEBUG_LOG"} <= _settings()
    assert "BACKFILL_WINDOW_START" not in _settings()  # given to a command check, not read
    paths = set(_commands(cli, click.Context(cli, info_name="backfill")))
    assert {("run",), ("ledger", "verify"), ("runs", "cancel"), ("emulator", "serve")} <= paths


@pytest.mark.parametrize("name", sorted(_settings()))
def test_every_setting_is_in_the_readme(name: str) -> None:
    assert f"`{name}`" in README, f"README.md does not document the setting {name}"


@pytest.mark.parametrize("path", sorted(_commands(cli, click.Context(cli, info_name="backfill"))), ids=" ".join)
def test_every_command_is_in_the_readme(path: tuple[str, ...]) -> None:
    assert _documented(path), f"README.md does not document `backfill {' '.join(path)}`"


@pytest.mark.parametrize("code", list(ExitCode), ids=lambda code: str(int(code)))
def test_every_exit_code_is_in_the_readme(code: ExitCode) -> None:
    paragraph = README[README.index("Exit codes:") :].split("\n\n", 1)[0]
    assert re.search(rf"(?<![\d.]){int(code)} [a-z]", paragraph), f"README.md's exit codes lack {int(code)}"
