"""Every flag of every command has its TOCSIN_* twin, and --help shows it (SPEC 6.1)."""

from __future__ import annotations

import click
from click.testing import CliRunner

from tocsin.cli import main


def flags(command: click.Command) -> list[click.Option]:
    return [
        param
        for param in command.params
        if isinstance(param, click.Option) and param.name not in {"help", "version"}
    ]


def test_every_flag_has_an_environment_twin_shown_in_help() -> None:
    assert isinstance(main, click.Group)
    for name, command in main.commands.items():
        help_text = CliRunner().invoke(main, [name, "--help"], terminal_width=200).output
        for flag in flags(command):
            assert isinstance(flag.envvar, str), f"tocsin {name} {flag.opts[0]} has no twin"
            assert flag.envvar.startswith("TOCSIN_"), flag.envvar
            assert flag.show_envvar, f"tocsin {name} {flag.opts[0]} hides its twin"
            assert f"env var: {flag.envvar}" in help_text, (name, flag.envvar)
