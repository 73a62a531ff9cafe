"""Entry point of a sandboxed worker: ``worker train|eval --fd N --train-py P [--weights W]``.

Started by the harness (:mod:`autoresearch.trainer.supervisor`), never by hand. ``--fd`` is the
worker's end of a socketpair to the harness; everything else the worker needs arrives over it.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="worker")
    parser.add_argument("role", choices=("train", "eval"))
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--train-py", type=Path, required=True)
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--lockdown", default="{}", help="JSON: rlimits and no_fork (worker.lockdown)")
    args = parser.parse_args(argv)
    from . import lockdown, wire

    lockdown.apply(json.loads(args.lockdown))  # before torch or train.py: this process is still ours
    sock = socket.socket(fileno=args.fd)
    sys.stdin.close()

    conn = wire.Connection(sock, lambda header: 1 << 24)  # the harness is trusted; its rows are bounded
    try:
        if args.role == "train":
            from . import training

            return training.main(conn, args.train_py)
        from . import scoring

        return scoring.main(conn, args.train_py, args.weights)
    except wire.PeerClosed:
        return 3  # the harness is gone or ended the run: nothing left to do
    finally:
        sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
