"""``autoresearch demo``: a local hub plus two volunteers on the CPU track (README's first command)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .. import console


def demo_cmd(
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Keep hub database and workspaces here (default: a new temp folder).")
    ] = None,
    experiments: Annotated[int, typer.Option("--experiments", "-n", help="Experiments per volunteer (the first is the baseline).")] = 3,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Exit when the volunteers are done instead of serving the hub.")] = False,
    track: Annotated[str, typer.Option("--track", help="Track (cpu; tiny for a quick check).")] = "cpu",
    proposer: Annotated[
        str | None, typer.Option("--proposer", help="offline or anthropic (default: anthropic when ANTHROPIC_API_KEY is set).")
    ] = None,
    port: Annotated[int, typer.Option("--port", help="Hub port on 127.0.0.1 (0: any free port).")] = 0,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run a local hub and two volunteer clients on the cpu track, then show what they found."""
    from ..demo import quiet_libraries, run_demo

    quiet_libraries()
    err = console.err()
    server, result = run_demo(
        directory=directory, experiments=experiments, track=track, proposer=proposer, sink=_line, port=port,
        live=err if err.is_terminal else None,
    )
    try:
        if json_:
            console.print_json(result.model_dump(mode="json"))
        else:
            table = Table(title=f"demo on {result.track}", title_justify="left")
            for col in ("volunteer", "key id", "experiments", "keeps", "crashes", "best val_bpb"):
                table.add_column(col)
            for row in result.volunteers:
                best = "—" if row.best_val_bpb is None else f"{row.best_val_bpb:.6f}"
                table.add_row(row.name, row.key_id[:16], str(row.experiments), str(row.keeps), str(row.crashes), best)
            console.out().print(table)
            console.out().print(f"findings: {result.findings_url}", highlight=False)
            console.out().print(f"files:    {result.directory}", highlight=False)
        if no_serve:
            console.info(
                f"the hub stops now; to browse the findings later: autoresearch hub serve "
                f"--db sqlite:///{result.directory / 'hub.db'}"
            )
            return
        console.info(f"serving the hub on {result.hub_url}; Ctrl-C to stop")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.info("stopping the hub")
    finally:
        server.stop()


def _line(text: str) -> None:
    console.err().print(text, markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
