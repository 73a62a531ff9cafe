"""The fixed metric, validation bits per byte, and the probes that keep it honest (trusted side).

Fixed evaluation — do not change. Changing anything here changes what every result on every track
means; it needs a new ``HARNESS_VERSION`` (and therefore new track ids).

The model runs in an evaluation worker the harness does not trust (:mod:`.worker.scoring`). For
each row it returns, per position ``t``, ``lse[t] = logsumexp(logits[t])`` and
``tgt[t] = logits[t, y[t]]``; the harness computes the cross-entropy ``lse − tgt`` and the byte
counts itself (:func:`bits_per_byte`). The inputs contain the targets shifted by one, so a worker
could look ahead or simply return made-up numbers; what it cannot do is stay consistent with a
second, fresh worker that never saw the original rows. That is the check (:func:`plan_probes`,
:func:`check_probes`):

- **causality probes**: row ``r`` with every token from a random split ``s`` on replaced by the
  tokens of another real row (so it reads like ordinary packed text). A fresh worker B scores it in
  batches of the real evaluation shape, mixed with other rows. Position ``t < s − 1`` has the same
  prefix and target in both rows, so A's and B's ``lse``/``tgt`` must agree; at ``t = s − 1`` the
  prefix is the same but the target differs, so the whole logit rows must agree — the harness asks
  both workers for them (after they committed their scores) and also checks each row against the
  worker's own ``lse``/``tgt``. Any use of a later token (or of the target) at a probed position,
  any state carried from batch to batch, and any mixing across rows shows up as a disagreement.
- **replays**: exact copies of random rows, scored by B; every position must agree with A.

``s`` is uniform over positions and ``r`` over rows, so a worker that cheats at a fraction ε of
positions survives ``P`` probes with probability ``(1 − ε)^P`` (docs/security.md has the figures).
The worker learns which positions were probed only after it has committed its scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# |a − b| ≤ atol + rtol·|b| for the same position scored twice (float32 on CPU; bf16 autocast on
# CUDA, whose rounding depends on the batch a row sits in). A look-ahead at one position moves that
# position's numbers by O(1) nats, far above either tolerance.
TOLERANCE = {"cpu": (1e-3, 1e-3), "cuda": (5e-2, 2e-2)}
PROBE_SHARE = 0.75  # of worker B's rows; the rest are replays


class ProbeFailed(Exception):
    """The evaluation worker's numbers are inconsistent: the message names the probe."""


def bits_per_byte(lse: np.ndarray, tgt: np.ndarray, targets: np.ndarray, token_bytes: np.ndarray) -> float:
    """Validation bits per byte from per-position scores.

    Args:
        lse, tgt: ``(N, T)`` log-sum-exp of the logits and logit of the target, nats.
        targets: ``(N, T)`` target token ids (``rows[:, 1:]``).
        token_bytes: ``(V,)`` UTF-8 byte length of each token, 0 for special tokens (BOS).

    Returns:
        ``Σ (lse − tgt) / (ln 2 × Σ bytes)`` over every target whose byte length is non-zero: summed
        cross-entropy in nats, to bits, divided by the UTF-8 bytes of those targets. Because the
        denominator counts bytes, not tokens, the value does not depend on the vocabulary (nanochat
        ``loss_eval.py``; upstream karpathy/autoresearch ``prepare.py`` ``evaluate_bpb``). NaN if any
        counted score is not finite.

    Raises:
        ValueError: no target carries bytes.
    """
    nbytes = token_bytes[targets]  # (N, T)
    mask = nbytes > 0
    total_bytes = int(nbytes.sum())
    if total_bytes == 0:
        raise ValueError("evaluation rows contain no target with a non-zero byte length")
    nats = (lse.astype(np.float64) - tgt.astype(np.float64))[mask].sum()
    return float(nats) / (math.log(2) * total_bytes)


@dataclass(frozen=True)
class Probe:
    """Row ``source`` of the evaluation rows with tokens ``split`` … T replaced (``row``)."""

    source: int
    split: int
    row: np.ndarray  # (T + 1,)


@dataclass(frozen=True)
class ProbePlan:
    """Worker B's rows (``rows``, shuffled) and what each is: ``("probe", k)`` or ``("replay", i)``."""

    rows: np.ndarray  # (M, T + 1)
    kinds: list[tuple[str, int]]
    probes: list[Probe]

    def audits_a(self) -> dict[int, list[int]]:
        """Positions worker A must show whole logit rows for: ``{source row: [s − 1, …]}``."""
        out: dict[int, list[int]] = {}
        for p in self.probes:
            out.setdefault(p.source, []).append(p.split - 1)
        return out

    def audits_b(self) -> dict[int, list[int]]:
        """The same for worker B, by B's row index."""
        return {j: [self.probes[k].split - 1] for j, (kind, k) in enumerate(self.kinds) if kind == "probe"}


def plan_probes(rows: np.ndarray, n_rows: int, rng: np.random.Generator) -> ProbePlan:
    """Draw ``n_rows`` rows for worker B: :data:`PROBE_SHARE` causality probes, the rest replays.

    A probe takes a uniform row ``r`` and split ``s`` in ``1..T`` and replaces ``r[s:]`` with
    ``r2[s:]`` of another uniform row whose token at ``s`` differs (so the target at ``s − 1``
    differs); ``rows`` is ``(N, T + 1)``.
    """
    n, width = rows.shape
    n_probes = round(n_rows * PROBE_SHARE) if n > 1 else 0
    probes: list[Probe] = []
    for _ in range(n_probes * 4):  # a few draws fail (r2[s] == r[s]); give up on a probe after that
        if len(probes) == n_probes:
            break
        r, r2 = (int(v) for v in rng.integers(0, n, size=2))
        s = int(rng.integers(1, width))
        if r2 == r or rows[r2, s] == rows[r, s]:
            continue
        probes.append(Probe(r, s, np.concatenate([rows[r, :s], rows[r2, s:]])))
    replays = [int(v) for v in rng.integers(0, n, size=n_rows - len(probes))]
    kinds = [("probe", k) for k in range(len(probes))] + [("replay", i) for i in replays]
    order = rng.permutation(len(kinds))
    kinds = [kinds[i] for i in order]
    stacked = np.stack([probes[k].row if kind == "probe" else rows[k] for kind, k in kinds])
    return ProbePlan(stacked, kinds, probes)


def _close(a: np.ndarray, b: np.ndarray, device: str) -> bool:
    atol, rtol = TOLERANCE[device]
    return bool(np.allclose(a, b, atol=atol, rtol=rtol, equal_nan=True))


def _logsumexp(row: np.ndarray) -> float:
    m = float(np.max(row))
    return m + math.log(float(np.exp(row.astype(np.float64) - m).sum())) if math.isfinite(m) else m


def _check_row(label: str, full: np.ndarray, lse: float, tgt: float, target: int, device: str) -> None:
    got = np.array([_logsumexp(full), float(full[target])])
    if not _close(got, np.array([lse, tgt]), device):
        raise ProbeFailed(f"{label}: the logit row shown does not match the scores it returned "
                          f"(logsumexp {got[0]:.4f} vs {lse:.4f}, target logit {got[1]:.4f} vs {tgt:.4f})")  # fmt: skip


def check_probes(
    plan: ProbePlan,
    rows: np.ndarray,
    a: tuple[np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray],
    a_rows: dict[tuple[int, int], np.ndarray],
    b_rows: dict[tuple[int, int], np.ndarray],
    device: str,
) -> int:
    """Check worker B's scores of the plan against worker A's scores of the evaluation rows.

    ``a``/``b``: ``(lse, tgt)`` arrays ``(N, T)`` / ``(M, T)``; ``a_rows``/``b_rows``: whole logit rows
    ``(V,)`` by ``(row, position)``. Returns the number of checks made.

    Raises:
        ProbeFailed: naming the first probe or replay that disagrees, and how.
    """
    (a_lse, a_tgt), (b_lse, b_tgt) = a, b
    for j, (kind, k) in enumerate(plan.kinds):
        if kind == "replay":
            if not (_close(b_lse[j], a_lse[k], device) and _close(b_tgt[j], a_tgt[k], device)):
                worst = int(np.nanargmax(np.abs(b_lse[j] - a_lse[k]) + np.abs(b_tgt[j] - a_tgt[k])))
                raise ProbeFailed(f"replay probe: row {k} scored again in a fresh process differs at position {worst} "
                                  "(the model's output depends on state, on the batch or on other rows)")  # fmt: skip
            continue
        probe = plan.probes[k]
        r, s = probe.source, probe.split
        if s > 1 and not (_close(b_lse[j, : s - 1], a_lse[r, : s - 1], device) and _close(b_tgt[j, : s - 1], a_tgt[r, : s - 1], device)):
            raise ProbeFailed(f"causality probe: row {r} with tokens from {s} on replaced changes the scores "
                              f"of earlier positions (the model looks at later tokens)")  # fmt: skip
        if not _close(b_lse[j, s - 1 : s], a_lse[r, s - 1 : s], device):
            raise ProbeFailed(f"causality probe: row {r}, split {s}: the log-sum-exp at position {s - 1} "
                              "depends on the next token (the model looks ahead)")  # fmt: skip
        full_a, full_b = a_rows[(r, s - 1)], b_rows[(j, s - 1)]
        _check_row(f"causality probe: row {r}, split {s}", full_a, float(a_lse[r, s - 1]), float(a_tgt[r, s - 1]), int(rows[r, s]), device)
        _check_row(f"causality probe: row {r}, split {s} (fresh process)", full_b, float(b_lse[j, s - 1]),
                   float(b_tgt[j, s - 1]), int(probe.row[s]), device)  # fmt: skip
        if not _close(full_b, full_a, device):
            raise ProbeFailed(f"causality probe: row {r}, split {s}: the logits at position {s - 1} depend on the "
                              "token that follows it (the model looks ahead)")  # fmt: skip
    return len(plan.kinds)
