"""The evaluation worker: a fresh sandboxed process that scores rows with the saved model.

Runs inside the sandbox (``python -m worker eval``), which can write nothing. It imports
``train.py`` (the saved model's classes live there), loads the model the training worker sent, and
for each batch of token rows the harness sends returns two numbers per position: the log-sum-exp of
the logits and the logit of the target token. The harness turns them into val_bpb itself and checks
them with probes (:mod:`autoresearch.trainer.evaluate`); after each batch it may ask for whole logit
rows at positions of its choosing, which this worker answers from the batch it just scored.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch

from .training import load_train_py, report_error, start
from .wire import Connection


def score(model: torch.nn.Module, rows: torch.Tensor, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Score ``rows`` ``(B, T+1)``: inputs ``rows[:, :-1]``, targets ``rows[:, 1:]``.

    Returns ``(lse, tgt, logits)``: ``(B, T)`` float32 log-sum-exp and target logit, and the raw
    ``(B, T, V)`` logits (kept for audits).

    Raises:
        TypeError: the model's output is not a ``(B, T, vocab_size)`` tensor.
    """
    x, y = rows[:, :-1], rows[:, 1:]  # (B, T) each
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if rows.is_cuda else nullcontext()
    with torch.no_grad(), autocast:
        logits = model(x)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (*x.shape, vocab_size):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise TypeError(f"model(x) must return logits of shape {(*x.shape, vocab_size)}, got {shape}")
    lf = logits.float()
    lse = torch.logsumexp(lf, dim=-1)  # (B, T)
    tgt = lf.gather(-1, y.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return lse, tgt, logits


def main(conn: Connection, train_py: Path, weights: Path) -> int:
    """Load the model when told, then answer ``score``/``audit`` requests until ``done``."""
    setup = start(conn, "eval")
    device = torch.device(str(setup["device"]))
    vocab_size = int(setup["vocab_size"])  # type: ignore[call-overload]
    try:
        load_train_py(train_py)
        header, _ = conn.recv()  # {"op": "load"}: the weights are in place
        model = torch.load(weights, map_location=device, weights_only=False)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"the saved model is a {type(model).__name__}, not a torch.nn.Module")
        model.eval()
    except BaseException as exc:
        report_error(conn, exc)
        return 0
    estimate = getattr(model, "estimate_flops", None)
    try:
        flops = float(estimate()) if callable(estimate) else None
    except Exception:
        flops = None
    conn.send({"op": "loaded", "num_params": sum(p.numel() for p in model.parameters()), "flops_per_token": flops})
    logits: torch.Tensor | None = None
    while True:
        header, payload = conn.recv()
        op = header["op"]
        if op == "done":
            return 0
        if op == "audit":
            positions = header["positions"]
            assert logits is not None and isinstance(positions, list)
            picked = torch.stack([logits[int(i), int(t)] for i, t in positions]) if positions else torch.empty(0, vocab_size)
            conn.send({"op": "audit"}, picked.float().cpu().contiguous().numpy().tobytes())
            continue
        b, width = int(header["rows"]), int(header["cols"])  # type: ignore[call-overload]
        rows = torch.frombuffer(bytearray(payload), dtype=torch.int32).view(b, width).long().to(device)
        try:
            lse, tgt, logits = score(model, rows, vocab_size)
        except TypeError as exc:
            report_error(conn, exc, kind="contract")
            return 0
        except Exception as exc:  # the harness retries smaller batches (an eval OOM)
            logits = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
            report_error(conn, exc)
            continue
        out = torch.cat([lse.reshape(-1), tgt.reshape(-1)]).cpu().contiguous()
        peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0
        conn.send({"op": "scores", "peak_vram_mib": peak}, out.numpy().tobytes())
