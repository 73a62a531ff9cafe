"""The static policy check of train.py (trainer/policy.py): allowed and forbidden snippets."""

from __future__ import annotations

import pytest

from autoresearch.trainer import tracks
from autoresearch.trainer.policy import check_source

ALLOWED = {
    "torch_and_nn": "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\nx = F.relu(torch.ones(2))",
    "stdlib_helpers": "import math, time, functools, itertools, collections, typing\nfrom dataclasses import dataclass\nfrom contextlib import nullcontext",
    "future": "from __future__ import annotations",
    "os_environ": "import os\nos.environ['PYTORCH_CUDA_ALLOC_CONF'] = 'expandable_segments:True'",
    "torch_compile": "import torch\nm = torch.compile(torch.nn.Linear(2, 2))",
    "getattr_constant": "import torch\nact = getattr(torch.nn.functional, 'gelu')",
    "harness_class": "from autoresearch.trainer.harness import Handle",
    "nested_function_import": "def f():\n    import math\n    return math.pi",
}

FORBIDDEN = {
    "subprocess": ("import subprocess", "subprocess"),
    "socket": ("import socket\ns = socket.socket()", "socket"),
    "from_socket": ("from socket import create_connection", "socket"),
    "os_system": ("import os\nos.system('ls')", "os.system"),
    "os_popen_via_alias": ("import os as o\no.popen('ls')", "os.popen"),
    "from_os_import_system": ("from os import system", "os.system"),
    "exec": ("exec('print(1)')", "'exec'"),
    "eval": ("x = eval('1+1')", "'eval'"),
    "compile": ("c = compile('1', 'f', 'eval')", "'compile'"),
    "dunder_import": ("m = __import__('socket')", "'__import__'"),
    "open_write": ("open('/tmp/x', 'w').write('hi')", "'open'"),
    "open_read_key": ("open('/home/u/.config/autoresearch/keys/ed25519.pem').read()", "'open'"),
    "aliased_eval": ("e = eval", "'eval'"),
    "urllib": ("import urllib.request", "urllib"),
    "requests": ("import requests", "requests"),
    "httpx": ("import httpx", "httpx"),
    "ctypes": ("import ctypes", "ctypes"),
    "importlib": ("import importlib\nimportlib.import_module('socket')", "importlib"),
    "builtins_module": ("import builtins", "builtins"),
    "builtins_tamper": ("__builtins__['len'] = None", "builtins"),
    "sys": ("import sys", "sys"),
    "pathlib_write": ("from pathlib import Path\nPath('x').write_text('y')", "pathlib"),
    "pickle": ("import pickle", "pickle"),
    "relative_import": ("from . import secrets", "relative"),
    "star_import": ("from torch import *", "*"),
    "torch_hub": ("import torch\ntorch.hub.load('a/b', 'c')", "torch.hub"),
    "torch_distributed": ("import torch.distributed as dist", "torch.distributed"),
    "from_torch_distributed": ("from torch import distributed", "torch.distributed"),
    "torch_save": ("import torch\ntorch.save({}, '/tmp/x.pt')", "torch.save"),
    "torch_load": ("import torch\nx = torch.load('/tmp/x.pt')", "torch.load"),
    "cpp_extension": ("from torch.utils.cpp_extension import load_inline", "cpp_extension"),
    "load_library": ("import torch\ntorch.ops.load_library('x.so')", "torch.ops.load_library"),
    "subclasses_escape": ("x = ().__class__.__bases__[0].__subclasses__()", "__subclasses__"),
    "builtins_via_self": ("b = print.__self__\nb.open('x')", "__self__"),
    "func_globals": ("def f():\n    pass\ng = f.__globals__", "__globals__"),
    "getattr_computed": ("import os\nf = getattr(os, 'sys' + 'tem')", "computed"),
    "getattr_forbidden_const": ("import os\nf = getattr(os, 'system')", "os.system"),
    "harness_internals": ("from autoresearch.trainer.run import safe_env", "class names"),
    "harness_module_object": ("import autoresearch.trainer.harness as h\nh.os.system('x')", "class names"),
    "harness_module_names": ("from autoresearch.trainer.harness import os", "class names"),
    "client_package": ("import autoresearch.client.config", "class names"),
    "syntax_error": ("def f(:\n    pass", "does not parse"),
    "import_in_function": ("def f():\n    import socket", "socket"),
}


@pytest.mark.parametrize("source", ALLOWED.values(), ids=ALLOWED.keys())
def test_allowed_snippets_pass(source: str) -> None:
    assert check_source(source) == []


@pytest.mark.parametrize(("source", "needle"), FORBIDDEN.values(), ids=FORBIDDEN.keys())
def test_forbidden_snippets_are_refused_with_a_reason(source: str, needle: str) -> None:
    findings = check_source(source)
    assert findings, f"policy let through: {source!r}"
    assert any(needle in f for f in findings), findings
    assert all(f.startswith("line ") for f in findings)


@pytest.mark.parametrize("track", tracks.TRACK_NAMES)
def test_every_reference_train_py_passes(track: str) -> None:
    assert check_source(tracks.reference_source(track)) == []


def test_findings_name_the_line() -> None:
    findings = check_source("import math\n\nimport socket\n")
    assert findings == [f for f in findings if f.startswith("line 3:")] and len(findings) == 1
