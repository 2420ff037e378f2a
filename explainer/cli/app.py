"""The `circuits` group: global options and the one place user errors become one line."""

from __future__ import annotations

import click

from sparse_model.errors import UserError

from .common import db_option


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            raise click.ClickException("interrupted; finished work is saved, run the same command again to continue") from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@db_option
@click.version_option(package_name="sparse-circuits")
def main() -> None:
    """Weight-sparse transformers, their task circuits, and LLM explanations of every circuit node.

    All results go to one DuckDB file (--db, $CIRCUITS_DB, default ./circuits.duckdb).

    \b
    Start here:
      circuits demo
      circuits train --preset demo --out runs/demo
      circuits models
      circuits sql "SELECT name, val_loss, n_nonzero FROM models"
    """
