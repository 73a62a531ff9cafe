"""The fixed metric: validation bits per byte. Fixed evaluation — do not change.

Changing anything here changes what every result on every track means; it needs a new
``HARNESS_VERSION`` (and therefore new track ids).
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F


class ContractError(Exception):
    """The module ``train.py`` returned does not honour the harness contract (shape, causality)."""


# --------------------------------------------------------------------------------------------------
# Fixed evaluation — do not change


@torch.no_grad()
def evaluate_bpb(
    model: torch.nn.Module,
    rows: torch.Tensor,
    token_bytes: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device | str = "cpu",
) -> float:
    """Validation bits per byte of ``model`` on the fixed evaluation ``rows``.

    Args:
        model: maps token ids ``(B, T)`` (long) to logits ``(B, T, V)``.
        rows: ``(N, T + 1)`` packed validation rows (:func:`autoresearch.trainer.data.eval_rows`);
            inputs are ``rows[:, :-1]``, targets ``rows[:, 1:]``.
        token_bytes: ``(V,)`` UTF-8 byte length of each token, 0 for special tokens (BOS).
        batch_size: rows per forward pass. It does not change the result beyond float rounding:
            the same rows are evaluated whatever it is.
        device: where to run; bf16 autocast on CUDA, float32 on CPU.

    Returns:
        ``Σ nats / (ln 2 × Σ bytes)``, where the sums run over every target token whose byte
        length is non-zero: cross-entropy in nats of the target under softmax(logits), summed, then
        divided by ln 2 (nats → bits) and by the total UTF-8 byte length of those targets. Special
        tokens are excluded from both sums. Because the denominator counts bytes, not tokens, the
        value does not depend on the tokenizer's vocabulary (nanochat ``loss_eval.py``; upstream
        karpathy/autoresearch ``prepare.py``). Lower is better; NaN if the model produced
        non-finite logits.

    Raises:
        ContractError: the logits do not have shape ``(B, T, len(token_bytes))``.
        ValueError: the rows contain no byte-carrying target.
    """
    device = torch.device(device)
    token_bytes = token_bytes.to(device=device, dtype=torch.int64)
    vocab_size = token_bytes.numel()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    was_training = model.training
    model.eval()
    total_nats = torch.zeros((), dtype=torch.float64, device=device)
    total_bytes = torch.zeros((), dtype=torch.int64, device=device)
    try:
        for start in range(0, rows.size(0), batch_size):
            batch = rows[start : start + batch_size].to(device=device, dtype=torch.int64)
            x, y = batch[:, :-1], batch[:, 1:]  # (B, T) each
            with autocast:
                logits = model(x)
            if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (*x.shape, vocab_size):
                shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                raise ContractError(f"model(x) must return logits of shape {(*x.shape, vocab_size)}, got {shape}")
            nats = F.cross_entropy(logits.float().reshape(-1, vocab_size), y.reshape(-1), reduction="none")  # (B*T,)
            nbytes = token_bytes[y.reshape(-1)]  # (B*T,)
            mask = nbytes > 0
            total_nats += torch.where(mask, nats, torch.zeros_like(nats)).sum(dtype=torch.float64)
            total_bytes += nbytes.sum()
    finally:
        model.train(was_training)
    n_bytes = int(total_bytes.item())
    if n_bytes == 0:
        raise ValueError("evaluation rows contain no target with a non-zero byte length")
    return float(total_nats.item()) / (math.log(2) * n_bytes)


@torch.no_grad()
def check_causal(model: torch.nn.Module, rows: torch.Tensor, *, device: torch.device | str = "cpu", atol: float = 1e-3) -> None:
    """Check that logits at position t do not depend on tokens after t.

    The harness feeds inputs that contain the targets shifted by one, so a model that looks ahead
    would score an impossible val_bpb. This changes the second half of one row and requires the
    logits of the first half to stay put (within ``atol``, loose enough for bf16 on CUDA).

    Raises:
        ContractError: the first half's logits moved.
    """
    device = torch.device(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    was_training = model.training
    model.eval()
    try:
        x = rows[:1, :-1].to(device=device, dtype=torch.int64)  # (1, T)
        half = x.size(1) // 2
        x2 = x.clone()
        x2[:, half:] = (x[:, half:] + 1) % max(2, int(rows.max().item()) + 1)  # every later token changes
        with autocast:
            a = model(x).float()[:, :half]
            b = model(x2).float()[:, :half]
    finally:
        model.train(was_training)
    if not torch.allclose(a, b, atol=atol, rtol=1e-3, equal_nan=True):
        raise ContractError("logits depend on later tokens: the returned model is not causal")
