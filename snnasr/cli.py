"""The ``snnasr`` command line: one subcommand per recipe stage, in pipeline order.

Each command only parses options and calls one library function; user mistakes surface as
``snnasr <stage>: <message>`` on stderr with exit code 1, never as a traceback.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from snnasr.io import SnnasrError

RECIPE_DIR = click.option("-d", "--recipe-dir", type=click.Path(file_okay=False, path_type=Path),
                          default=Path("."), show_default=True,
                          help="Recipe directory holding data/, exp/ and conf/.")


class OrderedGroup(click.Group):
    """Lists commands in the order they were added: the pipeline order."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(cls=OrderedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="snnasr")
def cli() -> None:
    """Spiking-neural-network speech recognition recipes, Kaldi-style, without Kaldi.

    Stages read and write files under a recipe directory (data/<set>/, data/lang/, exp/<run>/).
    """


def main() -> None:
    try:
        cli.main(prog_name="snnasr")
    except SnnasrError as e:
        ctx = click.get_current_context(silent=True)
        name = " ".join(sys.argv[1:2]) or "snnasr"
        click.echo(f"snnasr {name}: {e}", err=True)
        sys.exit(1)
