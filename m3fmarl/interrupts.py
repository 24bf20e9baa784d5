"""Signal handlers that raise (Ctrl-C, SIGTERM in training) without crashing a compiled kernel.

The numba kernels of :mod:`m3fmarl.kernels` take an ``np.random.Generator`` and draw from it
inline (2.5× faster than ``rng.standard_normal``: docs/benchmarks.md).  Numba unboxes the
Generator on every call, and part of that is Python code — ``ctypes.cast``, three times — whose
result it does not check.  A Python signal handler runs at the next bytecode boundary, so a
KeyboardInterrupt raised there (Ctrl-C) made the process die of a segmentation fault or an abort
instead of unwinding; CI saw it as a SIGTERM in training that never saved its last iteration.

A handler made by :func:`raising` does what Python's own does — raise — except while the
interpreter is in numba's, llvmlite's or ctypes' own Python code: then it has the signal sent
again 0.2 ms later and returns, and raises once the interpreter is back in ordinary code.
Importing :mod:`m3fmarl.kernels` puts such a handler in place of Python's default SIGINT
handler (only that one, only from the main thread), so the environments are safe under Ctrl-C
in any script; a handler installed by the user is left alone.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

import llvmlite
import numba

Handler = Callable[[int, "FrameType | None"], None]


def _package_dir(module: object) -> str:
    return os.path.dirname(os.path.abspath(module.__file__)) + os.sep  # type: ignore[attr-defined]


UNSAFE_DIRS = tuple(_package_dir(m) for m in (ctypes, numba, llvmlite))
"""Python code that numba runs inside a call into a kernel (typing the arguments, unboxing the
Generator with ``ctypes.cast``) and whose exceptions it does not always check."""


def raising(exc_type: type[BaseException]) -> Handler:
    """A signal handler that raises ``exc_type()``, never inside numba's own Python code."""

    deferring = [0]  # depth of this handler's deferring branch: a signal there must not raise

    def handler(signum: int, frame: FrameType | None) -> None:
        if deferring[0] or (frame is not None and (frame.f_code is handler.__code__  # inside itself
                                                   or frame.f_code.co_filename.startswith(UNSAFE_DIRS))):
            # the signal again in 0.2 ms, from another thread, when the interpreter has left
            # numba's code (not from here: it would run this handler again inside this one)
            deferring[0] += 1
            try:
                timer = threading.Timer(2e-4, os.kill, (os.getpid(), signum))
                timer.daemon = True
                timer.start()
            finally:
                deferring[0] -= 1
            return
        raise exc_type()

    return handler


def install_safe_ctrl_c() -> bool:
    """Replace Python's default SIGINT handler by ``raising(KeyboardInterrupt)``; True if done.
    Only from the main thread (where Python allows it) and only over Python's own default."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return False
    signal.signal(signal.SIGINT, raising(KeyboardInterrupt))
    return True
