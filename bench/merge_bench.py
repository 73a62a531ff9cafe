"""Rebase conflict rate: ``git merge-file`` (the client's old rebase) against the project's one
three-way merge (:func:`autoresearch.protocol.source.rebase`, also the hub's ``combine``).

The loop prepares the next proposal while a candidate trains; when the candidate is kept, the
proposal is rebased onto the new best, and a conflict makes the GPU wait for a fresh proposal.
Workload: every unordered pair of single-constant changes of a track's reference ``train.py`` on
*different* constants (one offline-proposer mutation per constant, in file order), one side taken as
the new best and the other as the prepared proposal. Both changes touch disjoint names, so every
pair has a correct merge.

Usage::

    python bench/merge_bench.py [--track cpu]        # prints a table; --json for JSON
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import tempfile
from pathlib import Path

from autoresearch.client.proposers.offline import apply_mutations, find_constants, mutations
from autoresearch.protocol.source import MergeConflict, extract_directions, rebase
from autoresearch.trainer.tracks import reference_source


def git_merge_file(base: str, ours: str, theirs: str) -> str | None:
    """The merge by ``git merge-file -p`` (None on a conflict), as client/loop.py did before."""
    with tempfile.TemporaryDirectory(prefix="ar-merge-") as tmp:
        paths = []
        for name, text in (("ours", ours), ("base", base), ("theirs", theirs)):
            path = Path(tmp) / name
            path.write_text(text, encoding="utf-8")
            paths.append(str(path))
        proc = subprocess.run(["git", "merge-file", "-p", "--quiet", *paths], capture_output=True, text=True, check=False)
    return proc.stdout if proc.returncode == 0 else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--track", default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ref = reference_source(args.track)
    changes = []
    for const in find_constants(ref):
        m = mutations(const)[0]
        changes.append((m.direction, apply_mutations(ref, [m])))
    pairs = list(itertools.combinations(changes, 2))
    git_conflicts = ours_conflicts = wrong = 0
    for (_, best), (want, proposal) in pairs:
        if git_merge_file(ref, best, proposal) is None:
            git_conflicts += 1
        try:
            merged = rebase(ref, best, proposal)
        except MergeConflict:
            ours_conflicts += 1
            continue
        wrong += extract_directions(best, merged) != [want]
    result = {
        "track": args.track,
        "constants": len(changes),
        "pairs": len(pairs),
        "git_merge_file_conflicts": git_conflicts,
        "rebase_conflicts": ours_conflicts,
        "rebase_wrong_merges": wrong,
    }
    if args.json:
        print(json.dumps(result))
    else:
        n = len(pairs)
        print(f"{n} pairs of single-constant changes of the {args.track} reference ({len(changes)} constants)")
        print(f"git merge-file conflicts: {git_conflicts} ({git_conflicts / n:.1%})")
        print(f"protocol.source.rebase conflicts: {ours_conflicts} ({ours_conflicts / n:.1%}), wrong merges: {wrong}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
