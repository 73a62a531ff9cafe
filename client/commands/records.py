"""``autoresearch sign FILE`` and ``autoresearch verify FILE``: signed envelopes for scripts and audits."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from autoresearch.protocol import ProtocolError, parse_record, sign, verify

from .. import console
from ..safetext import safe_text
from .keys import load_keys


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    return Path(path).read_bytes()


def sign_cmd(
    file: Annotated[str, typer.Argument(help="Record JSON (any autoresearch/*/v1 schema), or - for stdin.")],
) -> None:
    """Sign a record with your key: record JSON in, DSSE envelope JSON out on stdout."""
    record = parse_record(_read(file))
    env = sign(record, load_keys())
    sys.stdout.write(env.to_json() + "\n")


def verify_cmd(
    file: Annotated[str, typer.Argument(help="Envelope JSON file (e.g. from GET /api/v1/experiments/ID/envelope), or -.")],
    public_key: Annotated[
        str | None, typer.Option("--public-key", help="Hex public key to verify under (default: the one embedded, bound to its key id).")
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the verified record as JSON.")] = False,
) -> None:
    """Verify a signed envelope: exit 0 and a summary when valid, exit 1 with the reason when not."""
    try:
        result = verify(_read(file), public_key)
    except (ProtocolError, OSError) as exc:
        reason = getattr(exc, "reason", "unreadable")
        console.error(f"invalid ({reason}): " + " ".join(str(exc).split()))  # always one line
        raise typer.Exit(1) from None
    record = result.record
    data = record.model_dump(mode="json", by_alias=True)
    if json_:
        console.print_json({"record_id": result.record_id, "keyid": result.keyid, "record": data})
        return
    # the record may come from anyone (`curl …/envelope | autoresearch verify -`): shown as text
    console.out().print(
        console.text(f"valid {data['schema']}\nrecord id: {result.record_id}\nkey id:    {result.keyid}\n{_summary(data)}", one_line=False)
    )


def _summary(data: dict[str, object]) -> str:
    keys = ("track", "description", "outcome", "status", "hardware_class", "display_name", "created_at")
    lines = [f"{k}: {safe_text(str(data[k]), one_line=True)}" for k in keys if k in data]
    metrics = data.get("metrics")
    if isinstance(metrics, dict) and metrics.get("val_bpb") is not None:
        lines.append(f"val_bpb: {metrics['val_bpb']:.6f}")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    app.command("sign")(sign_cmd)
    app.command("verify")(verify_cmd)
