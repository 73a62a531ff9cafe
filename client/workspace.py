"""The volunteer's workspace: a git repo holding ``train.py``, ``program.md`` and ``results.tsv``,
with the loop's state under ``.autoresearch/`` (git-ignored)::

    train.py                    the file the agent edits (one commit per experiment on the run branch)
    program.md                  research instructions the human edits; proposers read it
    results.tsv                 upstream's five columns, rewritten from the records after every run
    .autoresearch/config.json   WorkspaceConfig (track, base branch, adoption)
    .autoresearch/experiments/NNNN.json   one LocalExperiment per experiment (ExperimentRecord inside)
    .autoresearch/pending.json  the candidate being run (a killed run is re-run from it on resume)
    .autoresearch/runs/NNNN/    run.log and result.json of each run (and the train.py that ran)
    .autoresearch/adopted_results.tsv     rows of an adopted upstream checkout's results.tsv
    .autoresearch/lock          held (flock) by the one `autoresearch run` in this workspace

Every state file is written atomically; git runs with a fallback identity when none is configured.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
from datetime import datetime
from pathlib import Path
from typing import IO, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from autoresearch.protocol import ExperimentRecord, utc_now

from .errors import StateFileError, UsageError, WorkspaceError
from .results import ResultRow, atomic_write_text, read_results, write_results

_logger = logging.getLogger(__name__)

STATE_DIR = ".autoresearch"
FALLBACK_IDENTITY = ("-c", "user.name=autoresearch", "-c", "user.email=autoresearch@localhost")
# Every git call of the loop runs with hooks off: a hook is code in the workspace that git would run
# with the loop's whole environment (keys, tokens), and the workspace holds files from elsewhere.
NO_HOOKS = ("-c", "core.hooksPath=/dev/null")
GITIGNORE_LINES = (".autoresearch/", "results.tsv", "__pycache__/", "run.log")


class AgentSettings(BaseModel):
    """The ``agent`` entry of ``.autoresearch/config.json``: the agent CLI of the command proposer.

    Used by ``run`` and ``join`` when ``--agent-command`` / ``AUTORESEARCH_AGENT_COMMAND`` is not
    given, e.g. ``"agent": {"command": "claude -p ...", "timeout": 900, "retries": 2}``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: str = Field(min_length=1, description="agent CLI, run once per proposal (client/proposers/command.py)")
    timeout: float | None = Field(default=None, gt=0, description="seconds per call before its process group is killed")
    retries: int | None = Field(default=None, ge=0, description="restarts of a stuck or crashed agent per proposal")


class WorkspaceConfig(BaseModel):
    """``.autoresearch/config.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    track: str = Field(description="track name or id given to `init`")
    base_branch: str = Field(description="branch run branches start from")
    adopted: bool = Field(default=False, description="adopted from an upstream autoresearch checkout")
    created_at: datetime
    agent: AgentSettings | None = Field(default=None, description="agent CLI of the command proposer (optional)")


class ProposerUsage(BaseModel):
    """What a proposal cost: LLM tokens and US dollars (None for proposers that use no LLM)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_usd: float = 0.0
    attempts: int = 1
    seconds: float = 0.0


class PendingExperiment(BaseModel):
    """The candidate being run; written before the run starts, removed once its result is recorded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    number: int
    tag: str
    commit: str = Field(description="the candidate commit (the best commit for a baseline)")
    parent_commit: str
    description: str
    proposer: str
    repair_of: int | None = None
    usage: ProposerUsage | None = None
    started_at: datetime


class PairedParent(BaseModel):
    """The parent re-measured next to a would-be keep (the loop's drift guard, docs/loop.md).

    ``reason``: why it was re-measured (one line); ``first_val_bpb``: the parent's val_bpb the
    child was first compared with (bits per byte); ``outcome`` / ``val_bpb`` / ``tokens_per_second``
    / ``num_steps`` / ``flops_per_token``: the re-measurement, as the harness reported it;
    ``run_dir``: its run folder, relative to the workspace.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str
    first_val_bpb: float
    outcome: str
    val_bpb: float | None = None
    tokens_per_second: float | None = None
    num_steps: int | None = None
    flops_per_token: float | None = None
    run_dir: str


class LocalExperiment(BaseModel):
    """One experiment as this workspace recorded it: ``.autoresearch/experiments/NNNN.json``.

    ``kind`` is ``run`` (trained here; ``record`` holds the unsigned ExperimentRecord), ``rejected``
    (failed the policy check, never run; ``rejected_reasons``), ``hub_done`` (the hub answered a
    claim with a result; ``record`` is the hub's record and ``hub_experiment_id`` its id) or
    ``imported`` (a row of an adopted upstream ``results.tsv``, ``imported_row``; ``record`` when
    its commit is in the repository, ``child_sha256`` empty otherwise; ``published_at`` once the
    loop handed it to a hub: client/upstream.py).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    number: int
    tag: str
    track: str = Field(description="track id the experiment belongs to")
    kind: Literal["run", "rejected", "hub_done", "imported"]
    commit: str | None = None
    parent_commit: str
    description: str
    proposer: str
    child_sha256: str
    child_canonical_sha256: str | None = None
    record: ExperimentRecord | None = None
    rejected_reasons: list[str] = Field(default_factory=list)
    hub_experiment_id: str | None = None
    repair_of: int | None = None
    usage: ProposerUsage | None = None
    run_dir: str | None = None
    flops_per_token: float | None = Field(default=None, description="the run's model FLOPs per token (harness report)")
    paired_parent: PairedParent | None = Field(default=None, description="the parent re-measured next to this run")
    imported_row: ResultRow | None = Field(default=None, description="the upstream results.tsv row (kind imported)")
    published_at: datetime | None = Field(default=None, description="when an imported record was handed to a hub")
    started_at: datetime
    finished_at: datetime


class Workspace:
    """An autoresearch workspace rooted at ``root`` (see the module docstring for the layout)."""

    def __init__(self, root: Path, config: WorkspaceConfig) -> None:
        self.root = root
        self.config = config
        self._cache: dict[str, tuple[int, LocalExperiment]] = {}

    # paths ---------------------------------------------------------------------------------------

    @property
    def train_py(self) -> Path:
        return self.root / "train.py"

    @property
    def program_md(self) -> Path:
        return self.root / "program.md"

    @property
    def results_tsv(self) -> Path:
        return self.root / "results.tsv"

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def experiments_dir(self) -> Path:
        return self.state_dir / "experiments"

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    @property
    def pending_path(self) -> Path:
        return self.state_dir / "pending.json"

    # creation ------------------------------------------------------------------------------------

    @classmethod
    def init(cls, root: Path, *, track: str, reference_source: str, program_md: str, adopt: bool = False) -> Workspace:
        """Create a workspace in ``root`` (new, or adopting an upstream autoresearch checkout).

        New: ``root`` must not hold a ``train.py``; creates the git repo (branch ``main``), writes
        ``train.py`` (``reference_source``), ``program.md``, ``results.tsv`` and ``.gitignore``, and
        commits. Adopt: ``root`` is a git checkout with a ``train.py``; its branch, history, and
        ``results.tsv`` rows are kept (rows go to ``.autoresearch/adopted_results.tsv``); a missing
        ``program.md`` is written.

        Raises:
            WorkspaceError: ``root`` already is a workspace, or does not fit the mode.
        """
        root = root.resolve()
        if (root / STATE_DIR / "config.json").exists():
            raise WorkspaceError(f"{root} already is an autoresearch workspace", hint="run `autoresearch run` in it")
        if adopt:
            return cls._adopt(root, track=track, program_md=program_md)
        if (root / "train.py").exists():
            raise WorkspaceError(
                f"{root} already holds a train.py",
                hint="use `autoresearch init DIR --adopt` to adopt an upstream autoresearch checkout",
            )
        root.mkdir(parents=True, exist_ok=True)
        if not (root / ".git").exists():
            _git(root, "init", "-q", "-b", "main")
        atomic_write_text(root / "train.py", reference_source)
        atomic_write_text(root / "program.md", program_md)
        _ensure_gitignore(root)
        write_results(root / "results.tsv", [])
        _git(root, "add", "train.py", "program.md", ".gitignore")
        _git(root, "commit", "-q", "-m", f"autoresearch: reference train.py for track {track}")
        return cls._write_config(root, track=track, adopted=False)

    @classmethod
    def _adopt(cls, root: Path, *, track: str, program_md: str) -> Workspace:
        if not (root / "train.py").is_file() or not (root / ".git").exists():
            raise WorkspaceError(
                f"{root} is not an autoresearch checkout (needs a git repo with train.py)",
                hint="create a fresh workspace with `autoresearch init DIR --track T`",
            )
        try:
            adopted_rows = read_results(root / "results.tsv")
        except ValueError as exc:  # names the file and line
            raise WorkspaceError(
                f"cannot adopt: {exc}", hint="fix or remove that row of results.tsv (upstream's five tab-separated columns)"
            ) from exc
        if not (root / "program.md").exists():
            atomic_write_text(root / "program.md", program_md)
        _ensure_gitignore(root)
        _git(root, "add", "program.md", ".gitignore")  # committed: a reset --hard must not undo them
        if _git(root, "diff", "--cached", "--name-only"):
            _git(root, "commit", "-q", "-m", "autoresearch: adopt this checkout (program.md, .gitignore)")
        ws = cls._write_config(root, track=track, adopted=True)
        write_results(ws.state_dir / "adopted_results.tsv", adopted_rows)
        from autoresearch.trainer import tracks

        from .upstream import import_rows

        import_rows(ws, adopted_rows, tracks.get_track(track))
        ws.write_results_tsv()
        _logger.info("adopted %s (%d results.tsv rows kept and imported as experiments)", root, len(adopted_rows))
        return ws

    @classmethod
    def _write_config(cls, root: Path, *, track: str, adopted: bool) -> Workspace:
        branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD")
        config = WorkspaceConfig(track=track, base_branch=branch, adopted=adopted, created_at=utc_now())
        for sub in ("experiments", "runs"):
            (root / STATE_DIR / sub).mkdir(parents=True, exist_ok=True)
        atomic_write_text(root / STATE_DIR / "config.json", config.model_dump_json(indent=2) + "\n")
        return cls(root, config)

    @classmethod
    def open(cls, root: Path) -> Workspace:
        """Open the workspace at ``root`` or the nearest parent folder that is one.

        Raises:
            WorkspaceError: no workspace there, or its config is unreadable.
        """
        root = root.resolve()
        for folder in (root, *root.parents):
            path = folder / STATE_DIR / "config.json"
            if path.exists():
                config = read_state(
                    path, WorkspaceConfig,
                    hint=f"restore it, or remove it and re-create it: autoresearch init {folder} --adopt --track TRACK",
                )  # fmt: skip
                return cls(folder, config)
        raise WorkspaceError(f"no autoresearch workspace at {root}", hint="create one with `autoresearch init DIR --track T`")

    # git -----------------------------------------------------------------------------------------

    def git(self, *args: str) -> str:
        """Run git in the workspace; returns stripped stdout. Raises WorkspaceError on failure."""
        return _git(self.root, *args)

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")

    def branch_exists(self, branch: str) -> bool:
        return subprocess.run(
            ["git", *NO_HOOKS, "-C", str(self.root), "rev-parse", "--verify", "-q", f"refs/heads/{branch}"],
            capture_output=True, check=False,
        ).returncode == 0

    def checkout_run_branch(self, tag: str) -> str:
        """Check out ``autoresearch/<tag>``, creating it at HEAD when new. Returns the branch name."""
        branch = f"autoresearch/{tag}"
        if self.branch_exists(branch):
            self.git("checkout", "-q", branch)
        else:
            self.git("checkout", "-q", "-b", branch)
        return branch

    def train_py_dirty(self) -> bool:
        return bool(self.git("status", "--porcelain", "--", "train.py"))

    def commit_train_py(self, source: str, message: str) -> str:
        """Write ``train.py`` and commit it; returns the new commit (40 hex)."""
        atomic_write_text(self.train_py, source)
        self.git("add", "train.py")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.head()

    def reset_hard(self, commit: str) -> None:
        self.git("reset", "-q", "--hard", commit)

    def source_at(self, commit: str) -> str:
        """``train.py`` as of ``commit``."""
        return _git(self.root, "show", f"{commit}:train.py", strip=False)

    # state ---------------------------------------------------------------------------------------

    def experiments(self) -> list[LocalExperiment]:
        """Every recorded experiment, by number (parsed files are cached by modification time)."""
        out = []
        for path in sorted(self.experiments_dir.glob("[0-9][0-9][0-9][0-9]*.json")):
            mtime = path.stat().st_mtime_ns
            cached = self._cache.get(path.name)
            if cached is None or cached[0] != mtime:
                hint = f"move it aside (mv {path} {path}.corrupt): that experiment is then forgotten; its run stays in {self.runs_dir}"
                cached = (mtime, read_state(path, LocalExperiment, hint=hint))
                self._cache[path.name] = cached
            out.append(cached[1])
        return out

    def save_experiment(self, exp: LocalExperiment) -> Path:
        path = self.experiments_dir / f"{exp.number:04d}.json"
        atomic_write_text(path, exp.model_dump_json(indent=2, by_alias=True) + "\n")
        return path

    def next_number(self) -> int:
        numbers = [e.number for e in self.experiments()]
        pending = self.pending()
        if pending:
            numbers.append(pending.number)
        return max(numbers, default=0) + 1

    def pending(self) -> PendingExperiment | None:
        if not self.pending_path.exists():
            return None
        hint = f"remove it (rm {self.pending_path}): the interrupted experiment is then not resumed"
        return read_state(self.pending_path, PendingExperiment, hint=hint)

    def set_pending(self, pending: PendingExperiment) -> None:
        atomic_write_text(self.pending_path, pending.model_dump_json(indent=2) + "\n")

    def clear_pending(self) -> None:
        self.pending_path.unlink(missing_ok=True)

    def new_run_dir(self, number: int, *, suffix: str = "") -> Path:
        """A fresh folder for a run of experiment ``number``: ``runs/NNNN<suffix>``, or
        ``runs/NNNN<suffix>-k`` when a killed attempt left one (its orphaned harness may still be
        writing there). ``suffix`` ``-parent``: the parent re-measured next to it."""
        path = self.runs_dir / f"{number:04d}{suffix}"
        attempt = 1
        while path.exists():
            attempt += 1
            path = self.runs_dir / f"{number:04d}{suffix}-{attempt}"
        path.mkdir(parents=True)
        return path

    def source_by_sha256(self, sha256: str) -> str | None:
        """A ``train.py`` this workspace ran, by the hex SHA-256 of its text (None when unknown).

        Looks at every recorded run's parent and child (the federation uploads sources with it).
        """
        for exp in reversed(self.experiments()):
            if exp.kind not in ("run", "imported") or exp.record is None or exp.commit is None:
                continue
            if exp.record.child_sha256 == sha256:
                return self.source_at(exp.commit)
            if exp.record.parent_sha256 == sha256:
                return self.source_at(exp.parent_commit)
        return None

    def write_results_tsv(self) -> None:
        """Rewrite ``results.tsv``: adopted rows, then one row per experiment run here."""
        rows = read_results(self.state_dir / "adopted_results.tsv")
        for exp in self.experiments():
            if exp.kind == "run" and exp.record is not None and exp.commit:
                rows.append(ResultRow.from_record(exp.commit, exp.record))
        write_results(self.results_tsv, rows)

    def lock(self) -> IO[str]:
        """Take the workspace's run lock (released when the returned file is closed or the process dies).

        Raises:
            WorkspaceError: another `autoresearch run` holds it.
        """
        fh = open(self.state_dir / "lock", "a+")  # noqa: SIM115 - returned to the caller, who closes it
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            fh.close()
            raise WorkspaceError(
                f"another `autoresearch run` is running in {self.root}", hint="stop it first (Ctrl-C)"
            ) from exc
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        return fh


M = TypeVar("M", bound=BaseModel)


def read_state(path: Path, model: type[M], *, hint: str) -> M:
    """A state file parsed as ``model``.

    Raises:
        StateFileError: the file cannot be read or is not a valid ``model`` (truncated, edited, not
            UTF-8); the message names the file and the first problem, ``hint`` says how to fix it.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StateFileError(path, f"cannot be read ({exc.strerror or exc})", hint=f"check the permissions of {path}") from exc
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        problem = f"{where}: {first['msg']}" if where else str(first["msg"])
        raise StateFileError(path, f"is not a valid state file ({problem})", hint=hint) from exc


def _identity_args(root: Path) -> tuple[str, ...]:
    """``-c user.name=… -c user.email=…`` when git has no identity configured (else nothing)."""
    if os.environ.get("GIT_COMMITTER_EMAIL") or os.environ.get("EMAIL"):
        return ()
    probe = subprocess.run(["git", "-C", str(root), "config", "user.email"], capture_output=True, check=False)
    return () if probe.returncode == 0 and probe.stdout.strip() else FALLBACK_IDENTITY


def _git(root: Path, *args: str, strip: bool = True) -> str:
    cmd = ["git", *NO_HOOKS, *_identity_args(root), "-C", str(root), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise UsageError("git is not installed", hint="install git; the workspace is a git repo") from exc
    if proc.returncode != 0:
        raise WorkspaceError(f"git {' '.join(args[:2])} failed in {root}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip() if strip else proc.stdout


def _ensure_gitignore(root: Path) -> None:
    path = root / ".gitignore"
    existing = path.read_text().splitlines() if path.exists() else []
    missing = [line for line in GITIGNORE_LINES if line not in existing]
    if missing:
        atomic_write_text(path, "\n".join([*existing, *missing]) + "\n")
