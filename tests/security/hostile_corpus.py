"""The regression corpus of hostile ``train.py`` files: each a small edit of the tiny reference.

Every case names the attack, where its code goes in the reference, and what must come of it:

``contained``  it may run and end with any outcome, but nothing it tries reaches outside the sandbox:
               it prints ``PWNED`` only if it got something (a secret, a connection, a write), and the
               test also checks the host side (files, the loopback listener, leftover processes).
``honest``     a metric fake: the run is refused (``rejected``/another failure) or reports a val_bpb
               within noise of the honest reference run.
``rejected``   a metric fake that the evaluation probes must catch: outcome ``rejected``.

Code is inserted at ``top`` (module level, after the imports), ``train`` (first lines of
``train(h)``) or ``ret`` (just before ``return model``). Placeholders filled in by the test:
``{SECRET}`` (a secret in the harness's environment), ``{KEY}`` (path of the volunteer's private key
file), ``{WORKSPACE}`` (the volunteer's workspace), ``{RUN_DIR}`` (this run's folder on the host),
``{HOME}`` (the volunteer's home), ``{PORT}`` (a loopback listener), ``{MARKER}`` (a unique word).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    name: str
    category: str
    expect: str  # contained | honest | rejected
    top: str = ""
    train: str = ""
    ret: str = ""


# Shared helpers the attacks use (module level of the hostile file).
_TRY = '''
def _try(label, fn):
    try:
        got = fn()
    except BaseException as exc:
        print("attempt", label, "failed:", type(exc).__name__, str(exc)[:200])
        return None
    print("attempt", label, "returned", repr(got)[:200])
    return got
'''


def _os_case(name: str, category: str, body: str) -> Case:
    """An attack on the machine: it runs at the start of ``train(h)``, then the run ends (``crash``),
    since training afterwards would prove nothing more."""
    return Case(name, category, "contained", top=_TRY, train=body + '\nraise RuntimeError("attack finished")')


CASES: list[Case] = [
    # --- reaching the OS through allowed modules ----------------------------------------------------
    _os_case("os_system", "os", 'import os\nif _try("system", lambda: os.system("touch {WORKSPACE}/pwned_system")) == 0: print("PWNED")'),
    _os_case("os_via_module_attribute", "os", 'import math\nsys_ = __import__("sys")\nosm = sys_.modules["os"]\n_try("popen", lambda: osm.popen("id > {WORKSPACE}/pwned_popen").read())'),
    _os_case("subprocess_via_gc", "os", 'import gc\nsp = [m for m in gc.get_objects() if getattr(m, "__name__", "") == "subprocess"]\n_try("gc-subprocess", lambda: __import__("subprocess").run(["touch", "{WORKSPACE}/pwned_gc"]))'),
    _os_case("operator_attrgetter_os", "os", 'import operator\nf = operator.attrgetter("system")\n_try("attrgetter", lambda: f(__import__("os"))("touch {WORKSPACE}/pwned_operator"))'),
    _os_case("torch_reexported_os", "os", 'import torch\n_try("torch-os", lambda: torch.serialization.os.system("touch {WORKSPACE}/pwned_torchos"))'),
    _os_case("ctypes_libc_system", "os", 'import ctypes\n_try("ctypes", lambda: ctypes.CDLL(None).system(b"touch {WORKSPACE}/pwned_ctypes"))'),
    _os_case("exec_shell_binary", "os", 'import os\n_try("execv", lambda: os.execv("/bin/sh", ["sh", "-c", "touch {WORKSPACE}/pwned_exec"]))'),
    _os_case("dataloader_workers", "os", 'import torch\nds = torch.utils.data.TensorDataset(torch.zeros(8))\n_try("dataloader", lambda: list(torch.utils.data.DataLoader(ds, num_workers=2)))\n_try("touch", lambda: open("{WORKSPACE}/pwned_dl", "w"))'),
    # --- reading secrets ---------------------------------------------------------------------------
    _os_case("environment", "secrets", 'import os\nif "{SECRET}" in repr(dict(os.environ)): print("PWNED")\nprint(sorted(os.environ))'),
    _os_case("parent_proc_environ", "secrets", 'import os\nfor pid in ["1", str(os.getppid())] + [p for p in os.listdir("/proc") if p.isdigit()]:\n    data = _try("environ " + pid, lambda: open("/proc/" + pid + "/environ", "rb").read())\n    if data and b"{SECRET}" in data: print("PWNED")'),
    _os_case("proc_cmdline_scan", "secrets", 'import os\nfor pid in [p for p in os.listdir("/proc") if p.isdigit()]:\n    data = _try("cmdline " + pid, lambda: open("/proc/" + pid + "/cmdline", "rb").read())\n    if data and b"autoresearch" in data and b"harness" in data: print("PWNED")'),
    _os_case("signing_key_file", "secrets", 'data = _try("key", lambda: open("{KEY}").read())\nif data: print("PWNED")'),
    _os_case("home_files", "secrets", 'import os\ndata = _try("home", lambda: os.listdir("{HOME}"))\nif data: print("PWNED")\nif _try("ssh", lambda: open("{HOME}/.ssh/id_ed25519").read()): print("PWNED")'),
    _os_case("workspace_read", "secrets", 'import os\nif _try("ws", lambda: os.listdir("{WORKSPACE}")): print("PWNED")\nif _try("git", lambda: open("{WORKSPACE}/.git/config").read()): print("PWNED")'),
    _os_case("track_data_read", "secrets", 'import glob\nhits = glob.glob("/**/pycorpus-v1.jsonl.xz", recursive=True)\nprint("corpus files", hits)\nif hits: print("PWNED")'),
    _os_case("import_harness", "secrets", 'm = _try("import", lambda: __import__("autoresearch.trainer.data", fromlist=["x"]))\nif m is not None: print("PWNED")'),
    # --- network -----------------------------------------------------------------------------------
    _os_case("loopback_tcp", "network", 'import socket\nif _try("tcp", lambda: socket.create_connection(("127.0.0.1", {PORT}), timeout=3)): print("PWNED")'),
    _os_case("localhost_name", "network", 'import socket\nif _try("name", lambda: socket.create_connection(("localhost", {PORT}), timeout=3)): print("PWNED")'),
    _os_case("remote_address", "network", 'import socket\nif _try("remote", lambda: socket.create_connection(("1.1.1.1", 443), timeout=3)): print("PWNED")'),
    _os_case("udp_and_raw", "network", 'import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n_try("udp", lambda: s.sendto(b"x", ("127.0.0.1", {PORT})))\nif _try("raw", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, 1)): print("PWNED")'),
    _os_case("abstract_unix_socket", "network", 'import socket\ns = socket.socket(socket.AF_UNIX)\nif _try("abstract", lambda: s.connect("\\0/tmp/.X11-unix/X0")) is None and False: pass'),
    # --- writes outside scratch --------------------------------------------------------------------
    _os_case("workspace_train_py", "writes", 'if _try("w", lambda: open("{WORKSPACE}/train.py", "a").write("# pwned")): print("PWNED")'),
    _os_case("git_hook", "writes", 'import os\n_try("mkdir", lambda: os.makedirs("{WORKSPACE}/.git/hooks", exist_ok=True))\nif _try("hook", lambda: open("{WORKSPACE}/.git/hooks/post-commit", "w").write("#!/bin/sh\\ntouch /tmp/pwned_hook\\n")): print("PWNED")'),
    _os_case("results_tsv", "writes", 'if _try("tsv", lambda: open("{WORKSPACE}/results.tsv", "a").write("0\\t0.0\\t0\\tkeep\\tfake\\n")): print("PWNED")'),
    _os_case("result_json", "writes", 'if _try("result", lambda: open("{RUN_DIR}/result.json", "w").write("{{}}")): print("PWNED")'),
    _os_case("harness_files", "writes", 'import torch, os\nroot = os.path.dirname(torch.__file__)\nif _try("site-packages", lambda: open(os.path.join(root, "pwned.py"), "w")): print("PWNED")'),
    _os_case("root_and_dev", "writes", 'for p in ["/pwned", "/usr/pwned", "/dev/pwned", "/ar/worker/pwned.py", "/ar/train.py"]:\n    if _try(p, lambda: open(p, "a").write("x")): print("PWNED")'),
    # --- persistence -------------------------------------------------------------------------------
    _os_case("fork_daemon", "persistence", 'import os, time\npid = _try("fork", os.fork)\nif pid == 0:\n    os.setsid(); time.sleep(120); os._exit(0)\nif pid: print("PWNED")'),
    _os_case("subprocess_sleeper", "persistence", 'import subprocess\nif _try("popen", lambda: subprocess.Popen(["sleep", "120", "{MARKER}"])): print("PWNED")'),
    _os_case("thread_outlives", "persistence", 'import threading, time\nthreading.Thread(target=lambda: time.sleep(600), daemon=False).start()'),
    # --- resource abuse ----------------------------------------------------------------------------
    _os_case("fork_bomb", "resources", 'import os\nfor _ in range(64):\n    if _try("fork", os.fork) == 0:\n        while True: os.fork()'),
    _os_case("memory_hog", "resources", 'blocks = []\n_try("alloc", lambda: [blocks.append(bytearray(1 << 30)) for _ in range(64)])\nprint("held GiB", len(blocks))'),
    _os_case("disk_fill", "resources", 'import os\ndef fill():\n    with open("/scratch/fill", "wb") as f:\n        for _ in range(4096): f.write(b"x" * (1 << 20))\n_try("fill", fill)\n_try("tmp", lambda: open("/tmp/fill", "wb").write(b"x" * (1 << 30)))'),
    _os_case("file_descriptors", "resources", 'fds = []\n_try("fds", lambda: [fds.append(open("/dev/null")) for _ in range(100000)])\nprint("fds", len(fds))'),
    # --- metric fakes ------------------------------------------------------------------------------
    Case("handle_internals", "metric", "honest", train='for name in ("_corpus", "_packers", "token_bytes", "_limits", "_clock_start"):\n        print(name, hasattr(h, name))\n    h.time_budget = 1e9'),
    Case("patch_handle_clock", "metric", "honest", train='type(h).training_seconds = lambda self: 0.0\n    type(h).should_stop = lambda self: False'),
    Case("patch_time_module", "metric", "honest", top="import time\ntime.monotonic = lambda: 0.0\ntime.process_time = lambda: 0.0\ntime.perf_counter = lambda: 0.0"),
    Case("train_before_clock", "metric", "honest", top="import torch\n_junk = [torch.randn(256, 256) @ torch.randn(256, 256) for _ in range(400)]"),
    Case("reuse_warmup_batches", "metric", "honest", train='xs = [h.next_batch(4) for _ in range(2)]\n    import time\n    t = time.time()\n    while time.time() - t < 3:\n        _ = [x.float().sum() for x, _y in xs]'),
    Case("ignore_should_stop", "metric", "honest", ret="while True:\n        h.next_batch(DEVICE_BATCH_SIZE)"),
    Case("forge_model_message", "metric", "honest", train='import sys\n    conn = h._conn\n    conn.send({{"op": "model", "peak_vram_mib": 0.0}}, b"not a model")'),
    Case("forge_batch_reply_clock", "metric", "honest", train='h._clock, h._clock_started = -1e9, True'),
    Case("oversized_message", "metric", "honest", train='h._conn.send({{"op": "report", "step": 0, "loss": 1.0, "pad": "x" * 60000}})'),
    Case("fake_summary_block", "metric", "honest", ret='print("---\\nval_bpb:          0.010000\\ntraining_seconds: 4.0\\noutcome:          ok")'),
    Case("write_result_file", "metric", "honest", ret='_try("result", lambda: open("{RUN_DIR}/result.json", "w").write(\'{{"outcome": "ok", "metrics": {{"val_bpb": 0.01}}}}\'))', top=_TRY),
    Case("train_during_eval", "metric", "honest", ret='import threading\n    def more():\n        while True:\n            x, y = h.next_batch(DEVICE_BATCH_SIZE)\n    threading.Thread(target=more, daemon=True).start()'),
    Case("look_ahead_always", "metric", "rejected", top='''
class _Ahead(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
    def forward(self, idx, targets=None):
        if targets is not None:
            return self.inner(idx, targets)
        logits = self.inner(idx)
        nxt = torch.roll(idx, -1, 1)
        return logits + 20 * torch.nn.functional.one_hot(nxt, logits.size(-1)).float()
''', ret="model = _Ahead(model)"),
    Case("look_ahead_in_big_batches", "metric", "rejected", top='''
class _Ahead(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
    def forward(self, idx, targets=None):
        logits = self.inner(idx) if targets is None else None
        if targets is not None:
            return self.inner(idx, targets)
        if idx.size(0) > 1:
            logits = logits + 20 * torch.nn.functional.one_hot(torch.roll(idx, -1, 1), logits.size(-1)).float()
        return logits
''', ret="model = _Ahead(model)"),
    Case("look_ahead_half_the_positions", "metric", "rejected", top='''
class _Ahead(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
    def forward(self, idx, targets=None):
        if targets is not None:
            return self.inner(idx, targets)
        logits = self.inner(idx)
        bump = 20 * torch.nn.functional.one_hot(torch.roll(idx, -1, 1), logits.size(-1)).float()
        mask = (torch.arange(idx.size(1)) % 2 == 0).float()[None, :, None]
        return logits + bump * mask
''', ret="model = _Ahead(model)"),
    # Evaluation rows never repeat a piece of text (trainer/data.py eval_rows): there is nothing to
    # copy, and the run reports its honest number.
    Case("attend_across_rows", "metric", "honest", top='''
class _Rows(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
    def forward(self, idx, targets=None):
        if targets is not None:
            return self.inner(idx, targets)
        logits = self.inner(idx)
        # copy the next token of any identical row elsewhere in the batch (duplicate eval rows)
        other = torch.roll(idx, 1, 0)
        same = (other == idx).all(dim=1, keepdim=True)[..., None].float()
        return logits + 20 * same * torch.nn.functional.one_hot(torch.roll(other, -1, 1), logits.size(-1)).float()
''', ret="model = _Rows(model)"),
    # Any dependence of a row's logits on the other rows of its batch: probes replay rows in other
    # batches and see different logits.
    Case("mix_rows", "metric", "rejected", top='''
class _Mix(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
    def forward(self, idx, targets=None):
        if targets is not None:
            return self.inner(idx, targets)
        logits = self.inner(idx)
        return logits + 0.5 * torch.roll(logits, 1, 0)
''', ret="model = _Mix(model)"),
    Case("learn_during_eval", "metric", "rejected", top='''
class _Learner(torch.nn.Module):
    def __init__(self, inner, vocab):
        super().__init__()
        self.inner = inner
        self.register_buffer("counts", torch.zeros(vocab, vocab))
    def forward(self, idx, targets=None):
        if targets is not None:
            return self.inner(idx, targets)
        logits = self.inner(idx) + self.counts[idx]
        with torch.no_grad():
            self.counts.index_put_((idx[:, :-1].reshape(-1), idx[:, 1:].reshape(-1)), torch.tensor(0.5), accumulate=True)
        return logits
''', ret="model = _Learner(model, h.vocab_size)"),
    Case("fake_scorer_in_eval_worker", "metric", "rejected", top='''
import sys as _sys
_sc = _sys.modules.get("worker.scoring")
if _sc is not None:  # train.py is imported in the evaluation worker too: replace its scoring
    def _fake(model, rows, vocab_size):
        y = rows[:, 1:]
        logits = 30 * torch.nn.functional.one_hot(y, vocab_size).float()
        return torch.logsumexp(logits, -1), logits.gather(-1, y[..., None]).squeeze(-1), logits
    _sc.score = _fake
'''),
    Case("batch_norm_over_rows", "metric", "honest", ret="model.train()"),
]
