"""The training worker: imports ``train.py``, calls ``train(h)`` and sends the model back.

Runs inside the sandbox (``python -m worker train``). Until ``train.py`` is imported this is our
code in a clean process, so the ``hello`` it sends (after importing torch) is a sound start mark
for the harness's budget clock; after that, nothing this process says is believed: the harness
counts tokens and time itself and only takes the model's bytes, which the evaluation worker — a
fresh sandboxed process — loads.
"""

from __future__ import annotations

import importlib.util
import io
import sys
import traceback
from pathlib import Path
from types import ModuleType

import torch

from .handle import BudgetExhausted, Handle, NonFiniteLoss
from .wire import Connection


def is_oom(exc: BaseException) -> bool:
    """True for an out-of-memory error (CUDA, host allocator or a RuntimeError saying so)."""
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def report_error(conn: Connection, exc: BaseException, kind: str = "exception") -> None:
    """Tell the harness why this worker is giving up (``kind``: ``exception`` or ``contract``)."""
    text = "".join(traceback.format_exception(exc)) if kind == "exception" else str(exc)
    conn.send({"op": "error", "kind": kind, "oom": is_oom(exc), "message": text[-8000:]})


def load_train_py(path: Path) -> ModuleType:
    """Import ``path`` as the module ``train`` (the name the saved model's classes pickle under).

    Raises:
        AttributeError: it defines no callable ``train``. Anything ``train.py`` raises at import.
    """
    spec = importlib.util.spec_from_file_location("train", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["train"] = module
    spec.loader.exec_module(module)
    if not callable(getattr(module, "train", None)):
        raise AttributeError(f"{path.name} defines no train(h) function")
    return module


# Imported before hello: torch imports these lazily on first use (``torch.optim`` pulls in
# ``torch._dynamo``, about 2 s of CPU), which on a CPU-time budget would be charged to train.py.
WARM_IMPORTS = ("torch._dynamo", "torch.optim")


def start(conn: Connection, role: str) -> dict[str, object]:
    """Say hello (torch is imported, ``train.py`` is not) and return the harness's setup."""
    if role == "train":
        for name in WARM_IMPORTS:
            importlib.import_module(name)
    conn.send({"op": "hello", "role": role, "torch": torch.__version__, "cuda": torch.version.cuda})
    header, _ = conn.recv()
    threads = header.get("num_threads")
    if isinstance(threads, int) and threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(int(header["seed"]))  # type: ignore[call-overload]
    return header


def saved_model(model: object) -> bytes:
    """``torch.save`` bytes of the module ``train(h)`` returned (a compiled wrapper is unwrapped).

    Raises:
        TypeError: not a ``torch.nn.Module``. Whatever pickling raises (an unpicklable attribute).
    """
    model = getattr(model, "_orig_mod", model)  # torch.compile's OptimizedModule wraps the module
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"train(h) must return a torch.nn.Module, got {type(model).__name__}")
    buf = io.BytesIO()
    torch.save(model, buf)
    return buf.getvalue()


def main(conn: Connection, train_py: Path) -> int:
    """Run ``train(h)`` once; every failure is reported to the harness, never raised."""
    setup = start(conn, "train")
    h = Handle(conn, setup)
    try:
        module = load_train_py(train_py)
        model = module.train(h)
    except (BudgetExhausted, NonFiniteLoss):
        return 0  # the harness refused the batch or saw the loss: it knows the outcome already
    except BaseException as exc:  # a broken train.py is an outcome, not our crash
        report_error(conn, exc)
        return 0
    try:
        blob = saved_model(model)
    except TypeError as exc:
        report_error(conn, exc, kind="contract")
        return 0
    except Exception as exc:
        report_error(conn, RuntimeError(
            f"the model train(h) returned cannot be saved with torch.save ({type(exc).__name__}: {exc}); "
            "the harness evaluates it in a fresh process, so it must pickle: no open handles, sockets, "
            "generators or lambdas as attributes"), kind="contract")
        return 0
    peak = torch.cuda.max_memory_allocated() / 2**20 if h.device.type == "cuda" else 0.0
    conn.send({"op": "model", "peak_vram_mib": peak}, blob)
    return 0
