"""``smz``: the one command line that fronts every job."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="micro-muzero: Stochastic MuZero on 1-minute forex bars.", no_args_is_help=True)

DbOption = Annotated[Path, typer.Option("--db", help="DuckDB file holding the data set.")]
InstrumentOption = Annotated[str, typer.Option("--instrument", help="Instrument name, e.g. GBPJPY.")]


class InputFormat(StrEnum):
    auto = "auto"
    histdata_ascii = "histdata-ascii"
    histdata_mt = "histdata-mt"
    csv = "csv"


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Bar files: .csv or the vendor's .zip.")],
    instrument: InstrumentOption,
    db: DbOption,
    fmt: Annotated[InputFormat, typer.Option("--format", help="Input format.")] = InputFormat.auto,
    tz: Annotated[
        str | None,
        typer.Option(help="Zone of naive timestamps (default: UTC-5 for HistData, required for MT4)."),
    ] = None,
    strict: Annotated[bool, typer.Option(help="Fail with exit code 2, writing nothing, on any bad row.")] = False,
) -> None:
    """Load 1-minute bars into the database, rejecting invalid rows with a reason."""
    from services.jobs.ingest import IngestError, run_ingest

    try:
        summary = run_ingest(paths, instrument=instrument, db=db, fmt=fmt.value, tz=tz, strict=strict)
    except IngestError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(summary.render())
    if summary.failed:
        raise typer.Exit(2)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
