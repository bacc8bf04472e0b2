"""README.md names every option of every command, and the commands' options are exactly those
of the settings table: an option cannot be added, in the table or in cli.py, without README."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from localdicom.cli import main
from localdicom.settings import OPTIONS, Option

README = Path(__file__).parent.parent / "README.md"


def _flags(command: click.Command) -> dict[str, click.Option]:
    """Each flag of the command's options ("-p", "--port", "--no-fsync"), but not --help."""
    return {
        flag: param
        for param in command.params
        if isinstance(param, click.Option)
        for flag in param.opts + param.secondary_opts
    }


def _commands(group: click.Group = main, prefix: str = "") -> dict[str, click.Command]:
    """Every command by the name the table uses: "serve", and "trash restore" for the
    subcommands of a group; as click lists them, those imported only when named too."""
    found: dict[str, click.Command] = {}
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None, name
        found[prefix + name] = command
        if isinstance(command, click.Group):
            found |= _commands(command, f"{prefix}{name} ")
    return found


COMMANDS = _commands()


def _declared(option: Option) -> set[str]:
    return {flag for declaration in option.flags for flag in declaration.split("/")}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_readme_names_every_long_flag(name: str) -> None:
    readme = README.read_text(encoding="utf-8")
    # A whole flag: --fsync in "--fsync/--no-fsync" counts, --series in "--series-x" would not.
    missing = [
        flag
        for flag in _flags(COMMANDS[name])
        if flag.startswith("--") and not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", readme)
    ]
    assert not missing, f"README.md does not mention {missing} of 'localdicom {name}'"


@pytest.mark.parametrize(
    "option", OPTIONS, ids=lambda option: f"{'+'.join(option.commands)} {' '.join(option.flags)}"
)
def test_every_table_option_is_offered_by_its_commands(option: Option) -> None:
    assert option.commands, f"{option.flags} belongs to no command"
    for name in option.commands:
        assert name in COMMANDS, f"{option.flags} names an unknown command {name!r}"
        offered = _flags(COMMANDS[name])
        declared = _declared(option)
        assert declared <= offered.keys(), f"'localdicom {name}' lacks {declared - offered.keys()}"
        assert {offered[flag].name for flag in declared} == {option.name}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_of_a_command_is_in_the_table(name: str) -> None:
    in_table = {flag for option in OPTIONS if name in option.commands for flag in _declared(option)}
    assert _flags(COMMANDS[name]).keys() == in_table
