"""`circuits train` and `circuits models`."""

from __future__ import annotations

import click

from .common import db_option, device_option, open_store, output_options, print_rows


@click.command("train")
@click.option("--preset", default="demo", show_default=True,
              help="tiny: seconds, for tests; small: about 5 minutes; demo: about 9 minutes, learns the quote and indentation tasks; standard: about 30 minutes.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder (resumed if it holds this run).")
@click.option("--density", type=float, default=None, help="Target fraction of nonzero weights per matrix, in (0, 1]; 1 = dense baseline.")
@click.option("--afrac", type=float, default=None, help="AbsTopK: fraction of activations kept at each node location, in (0, 1].")
@click.option("--corpus", "corpus_dir", type=click.Path(), default=None, help="Folder of .py files (default: this Python's standard library).")
@click.option("--steps", type=int, default=None, help="Override the preset's number of optimizer steps.")
@click.option("--seed", type=int, default=None, help="Override the preset's seed.")
@click.option("--checkpoint-every", type=int, default=None, help="Steps between checkpoints (default: 5% of the run).")
@device_option
@db_option
def train_command(preset, out, density, afrac, corpus_dir, steps, seed, checkpoint_every, device):
    """Train a weight-sparse GPT on Python code and record it in the models table.

    Killed or interrupted, the same command resumes from the last checkpoint and ends with the
    same weights as an uninterrupted run.

    Under torchrun, the processes train one model together (the batch split between them);
    process 0 writes the run folder and the store.

    \b
    Example:
      circuits train --preset demo --out runs/demo
      circuits train --preset demo --density 1 --out runs/demo-dense
      torchrun --standalone --nproc_per_node 2 $(which circuits) train --preset demo --out runs/demo
    """
    from sparse_model.distributed import env_rank
    from sparse_model.train import train

    main = env_rank() == 0
    if main:
        with open_store():  # fail now, not after training, if the database is unusable
            pass
    summary = train(out, preset, density=density, afrac=afrac, steps=steps, seed=seed,
                    corpus_dir=corpus_dir, checkpoint_every=checkpoint_every, device=device)
    if summary is None:  # not process 0 of a torchrun job
        return
    with open_store() as store:
        store.upsert_model(summary)
    click.echo(f"model {summary['name']}: {summary['steps']} steps, {summary['tokens_seen']:,} tokens, "
               f"val loss {summary['val_loss']:.3f}, {summary['n_nonzero']:,} of {summary['n_params']:,} weights nonzero; "
               f"run folder {summary['run_dir']}")


@click.command("models")
@output_options
@db_option
def models_command(fmt):
    """List trained models.

    \b
    Example:
      circuits models --csv
    """
    with open_store(read_only=True) as store:
        rows = store.list_models()
    cols = ["name", "preset", "density", "afrac", "n_nonzero", "n_params", "tokens_seen", "train_loss", "val_loss", "run_dir"]
    print_rows(cols, [[r["name"], r["config"]["preset"], r["config"]["train"]["density"], r["config"]["model"]["afrac"],
                       r["n_nonzero"], r["n_params"], r["tokens_seen"], r["train_loss"], r["val_loss"], r["run_dir"]]
                      for r in rows], fmt)


COMMANDS = [train_command, models_command]
