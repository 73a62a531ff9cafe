"""Outcome classification of real harness subprocess runs (toy train.py files, tiny track)."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest

from autoresearch.trainer import tracks
from autoresearch.trainer.result import RunResult, TrainProgress
from autoresearch.trainer.run import run_training, safe_env

pytestmark = pytest.mark.slow

ENV = {"OMP_NUM_THREADS": "1"}

BIGRAM = """
import torch

class Bigram(torch.nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.table = torch.nn.Embedding(vocab, vocab)

    def forward(self, idx, targets=None):
        logits = self.table(idx)
        if targets is None:
            return logits
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
"""


def _run(tmp_path: Path, body: str, budget: float = 1.0, **kwargs: object) -> RunResult:
    train_py = tmp_path / "train.py"
    train_py.write_text(BIGRAM + textwrap.dedent(body))
    return run_training(train_py, tracks.get_track("tiny", time_budget=budget), tmp_path / "run", extra_env=ENV, **kwargs)  # type: ignore[arg-type]


def _on_disk(result: RunResult) -> RunResult:
    return RunResult.model_validate_json((result.log_path.parent / "result.json").read_text())


def test_a_short_honest_run_is_ok_and_reports_progress(tmp_path: Path) -> None:
    seen: list[TrainProgress] = []
    result = _run(
        tmp_path,
        """
        def train(h):
            model = Bigram(h.vocab_size).to(h.device)
            opt = torch.optim.Adam(model.parameters(), lr=0.1)
            step = 0
            while not h.should_stop():
                x, y = h.next_batch(4)
                loss = model(x, y)
                loss.backward(); opt.step(); opt.zero_grad()
                h.report(step, loss.item()); step += 1
            return model
        """,
        on_progress=seen.append,
    )
    assert result.outcome == "ok", result.error
    m = result.metrics
    assert m.val_bpb is not None and 0 < m.val_bpb < 8
    # should_stop() ends half a step early at most (a step is far below 0.5 s even on a loaded machine)
    assert 0.5 <= m.training_seconds <= 1.0 * 1.05 + 1.0  # type: ignore[operator]
    assert m.num_steps and m.num_steps > 0 and m.total_tokens == m.num_steps * 4 * 128
    assert m.num_params == 257 * 257 and m.depth is None
    assert seen and all(p.time_budget == 1.0 for p in seen)
    assert _on_disk(result) == result
    log = result.log_path.read_text()
    assert "---\nval_bpb:" in log and "training_seconds:" in log and "outcome:          ok" in log


def test_exception_is_a_crash_with_the_traceback_tail(tmp_path: Path) -> None:
    result = _run(tmp_path, """
        def train(h):
            h.next_batch(2)
            raise ZeroDivisionError("boom in train.py")
        """)
    assert result.outcome == "crash" and result.metrics.val_bpb is None
    assert "ZeroDivisionError: boom in train.py" in (result.error or "") and "Traceback" in (result.error or "")
    assert _on_disk(result).outcome == "crash"


def test_syntax_error_is_a_crash(tmp_path: Path) -> None:
    result = _run(tmp_path, "def train(h)\n    return None\n")
    assert result.outcome == "crash" and "SyntaxError" in (result.error or "")


def test_nan_loss_is_nan(tmp_path: Path) -> None:
    result = _run(tmp_path, """
        def train(h):
            model = Bigram(h.vocab_size)
            for step in range(3):
                h.next_batch(2)
                try:
                    h.report(step, float("nan") if step == 2 else 1.0)
                except Exception:
                    pass  # cannot swallow the harness's signal: it is not an Exception
            return model
        """)
    assert result.outcome == "nan" and "step 2" in (result.error or "") and result.metrics.val_bpb is None


def test_model_with_non_finite_logits_is_nan(tmp_path: Path) -> None:
    result = _run(tmp_path, """
        def train(h):
            model = Bigram(h.vocab_size)
            with torch.no_grad():
                model.table.weight.fill_(float("nan"))
            return model
        """)
    assert result.outcome == "nan" and "val_bpb" in (result.error or "")


def test_sleeping_past_the_budget_is_killed_as_timeout(tmp_path: Path) -> None:
    limits = tracks.limits(tracks.get_track("tiny"))
    t0 = time.monotonic()
    result = _run(tmp_path, """
        import time
        def train(h):
            for _ in range(3):
                h.next_batch(1)  # the clock starts
            time.sleep(3600)
        """)
    elapsed = time.monotonic() - t0
    assert result.outcome == "timeout" and "killed" in (result.error or "")
    assert elapsed < limits.startup_seconds + 2 * 1.0 + limits.grace_seconds  # killed, not waited out
    assert json.loads((tmp_path / "run" / "result.json").read_text())["outcome"] == "timeout"


def test_training_past_the_tolerance_is_over_budget(tmp_path: Path) -> None:
    result = _run(tmp_path, """
        def train(h):
            model = Bigram(h.vocab_size)
            while True:  # ignores h.should_stop(), and trains (CPU time is the budget on tiny)
                x, _ = h.next_batch(4)
                model(x).sum().backward()
        """)
    assert result.outcome == "over_budget" and result.metrics.val_bpb is None
    assert result.metrics.training_seconds is not None and result.metrics.training_seconds > 1.05


def test_returning_something_else_than_a_module_is_a_crash(tmp_path: Path) -> None:
    result = _run(tmp_path, "def train(h):\n    return 42\n")
    assert result.outcome == "crash" and "torch.nn.Module" in (result.error or "")


def test_a_model_that_looks_ahead_is_refused(tmp_path: Path) -> None:
    result = _run(tmp_path, """
        class Cheat(torch.nn.Module):
            def __init__(self, vocab):
                super().__init__()
                self.vocab = vocab
                self.w = torch.nn.Parameter(torch.zeros(1))
            def forward(self, idx):
                return torch.nn.functional.one_hot(torch.roll(idx, -1, 1), self.vocab).float() * 30
        def train(h):
            return Cheat(h.vocab_size)
        """)
    assert result.outcome == "rejected" and "causality probe" in (result.error or "")
    assert result.metrics.val_bpb is None and result.metrics.training_seconds is not None


def test_worker_environment_is_an_allowlist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-secret")
    monkeypatch.setenv("AUTORESEARCH_HUB_TOKEN", "t0ken")
    monkeypatch.setenv("SOME_UNRELATED_SETTING", "x")
    result = _run(tmp_path, """
        import os
        def train(h):
            names = set(os.environ)
            assert not any("KEY" in k or "TOKEN" in k or k.startswith(("ANTHROPIC", "AUTORESEARCH")) for k in names), names
            assert "SOME_UNRELATED_SETTING" not in names and os.environ["OMP_NUM_THREADS"] == "1", names
            assert os.environ["HOME"] == os.getcwd(), (os.environ["HOME"], os.getcwd())
            return Bigram(h.vocab_size)
        """)
    assert result.outcome == "ok", result.error


def test_safe_env_filters_case_insensitively() -> None:
    env = safe_env({"EXTRA": "1"}, base={"PATH": "/bin", "my_api_key": "x", "GITHUB_TOKEN": "y", "DB_PASSWORD": "z",
                                         "AUTORESEARCH_HOME": "h", "AUTORESEARCH_CACHE": "c"})
    assert env == {"PATH": "/bin", "AUTORESEARCH_CACHE": "c", "EXTRA": "1", "PYTHONUNBUFFERED": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def test_out_of_memory_is_oom(tmp_path: Path) -> None:
    result = _run(tmp_path, """
        def train(h):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        """)
    assert result.outcome == "oom" and "Tried to allocate" in (result.error or "")


def test_evaluation_failure_retries_with_smaller_batches(tmp_path: Path) -> None:
    result = _run(tmp_path, """
        class Fussy(Bigram):
            def forward(self, idx, targets=None):
                if idx.size(0) > 4:
                    raise RuntimeError("out of memory (pretend): batch too large for evaluation")
                return super().forward(idx, targets)
        def train(h):
            return Fussy(h.vocab_size)
        """)
    assert result.outcome == "ok", result.error
    assert result.metrics.val_bpb is not None and result.metrics.val_bpb > 7.5  # untrained: at least ~log2(257)
    assert "retrying smaller" in result.log_path.read_text()


def test_evaluation_that_always_fails_is_eval_crash(tmp_path: Path) -> None:
    result = _run(tmp_path, """
        class Broken(Bigram):
            def forward(self, idx, targets=None):
                if not self.training:
                    raise ValueError("forward pass broken in eval mode")
                return super().forward(idx, targets)
        def train(h):
            return Broken(h.vocab_size)
        """)
    assert result.outcome == "eval_crash" and "broken in eval mode" in (result.error or "")
    assert result.metrics.val_bpb is None and result.metrics.training_seconds is not None
