"""The CPU backend's native kernels (``kernels/cpu_native.c``), built at first use.

The source is compiled once per machine with the system C compiler
(``$CC``, else ``cc``, ``gcc``, ``clang``) at ``-O3 -march=native`` and cached
as a shared library under ``$GPUDL_NATIVE_CACHE``, else
``<cache home>/gpudl/native``, by a hash of the source, the compiler, the
flags and the CPU (a library built for one CPU's instructions must not be
loaded on another that shares the cache).  It is written atomically, so a
crash mid-build leaves no half library behind.

Nothing is required: where no compiler answers, the build fails or
``GPUDL_NATIVE=0`` is set, :func:`lib` returns None, the CPU backend keeps
its NumPy path, and :func:`status` says why.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading

from ._shared import cache_dir

__all__ = ["lib", "status", "SOURCE"]

SOURCE = "cpu_native.c"
_FLAGS = ("-O3", "-std=c11", "-ffp-contract=fast", "-shared", "-fPIC", "-fno-strict-aliasing")
_lock = threading.Lock()
_state = {"lib": None, "tried": False, "why": "not built yet"}

_L, _P, _I = ctypes.c_long, ctypes.c_void_p, ctypes.c_int
_SIGNATURES = {
    "gd_pack": (_P, _L, _L, _L, _L, _P, _L, _L, _L, _L, _L, _L),
    "gd_pack_phase": (_P, _L, _L, _L, _L, _P, _L, _L, _L, _L, _L, _L, _L, _L, _L, _L, _L),
    "gd_shift_conv": (_P, _L, _I, _P, _I, _P, _P, _I, _L, _L, _L, _L, _L, _L, _L, _P),
    "gd_wgrad_pos": (_P, _L, _I, _P, _L, _I, _P, _I, _L, _L, _L, _L, _L, _P),
    "gd_wgrad_cl": (_P, _L, _P, _L, _I, _P, _I, _L, _L, _L, _L, _L, _P),
    "gd_pack_cl": (_P, _L, _L, _L, _L, _P, _L, _L, _L, _L, _L),
    "gd_bn_fwd": (_P, _L, _L, _L, _P, _P, _I, _P, _P, None, _L, _L, _P, _P, _P),
    "gd_bn_bwd": (_P, _P, _L, _L, _L, _P, _P, _I, _L, _L, _P, _P, _P),
    "gd_relu_back": (_P, _P, _P, _L, _L),
    "gd_max_pool": (_P, _L, _L, _L, _L, _L, _L, _L, _L, _L, _L, _L, _L, _P, _P),
    "gd_max_pool_back": (_P, _P, _L, _L, _L, _L, _P),
}


def _source_path():
    from .kernels import kernel_dir
    return os.path.join(kernel_dir(), SOURCE)


def _compiler():
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return shutil.which(cc)
    return None


def _cpu_id():
    """What -march=native compiles for: the machine and its CPU's model and flags."""
    parts = [platform.machine()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key = line.split(":", 1)[0].strip()
                if key in ("model name", "flags", "Features", "CPU part") and line not in parts:
                    parts.append(line)
                if line.strip() == "":
                    break                      # the first CPU is enough
    except OSError:
        parts.append(platform.processor())
    return "".join(parts)


def _build(cc, flags, src, so):
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=os.path.dirname(so))
    os.close(fd)
    try:
        r = subprocess.run([cc, *flags, src, "-o", tmp, "-lm"], capture_output=True, text=True,
                           timeout=300)
        if r.returncode != 0:
            return (r.stderr or r.stdout).strip().splitlines()[-1:] or ["failed"]
        os.chmod(tmp, 0o755)      # as cc -o makes it (mkstemp: 0600), for others sharing the cache
        os.replace(tmp, so)
        return None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load():
    if os.environ.get("GPUDL_NATIVE", "").strip() == "0":
        return None, "turned off by GPUDL_NATIVE=0"
    cc = _compiler()
    if cc is None:
        return None, "no C compiler found ($CC, cc, gcc, clang)"
    try:
        src = _source_path()
        with open(src, "rb") as f:
            text = f.read()
        cache = cache_dir("GPUDL_NATIVE_CACHE", "native")
    except OSError as e:
        return None, f"{type(e).__name__}: {e}"
    extra = tuple(shlex.split(os.environ.get("GPUDL_NATIVE_CFLAGS", "")))
    errors = []
    # -march=native where the compiler knows it, else the baseline instruction set
    for arch in (("-march=native",), ()):
        flags = _FLAGS + arch + extra
        h = hashlib.sha256()
        for part in (text, cc.encode(), repr(flags).encode(), _cpu_id().encode()):
            h.update(len(part).to_bytes(8, "little") + part)
        so = os.path.join(cache, h.hexdigest()[:32] + ".so")
        if not os.path.exists(so):
            try:
                err = _build(cc, flags, src, so)
            except (OSError, subprocess.SubprocessError) as e:
                err = [f"{type(e).__name__}: {e}"]
            if err:
                errors.append(f"{os.path.basename(cc)} {' '.join(arch) or '(no -march)'}: {err[0]}")
                continue
        try:
            dll = ctypes.CDLL(so)
            for name, args in _SIGNATURES.items():
                for suffix, real in (("_f", ctypes.c_float), ("_d", ctypes.c_double)):
                    fn = getattr(dll, name + suffix)       # None: a scalar of the data's type
                    fn.argtypes, fn.restype = [real if a is None else a for a in args], None
        except (OSError, AttributeError) as e:
            errors.append(f"loading {so}: {e}")
            continue
        return dll, f"built with {os.path.basename(cc)} {' '.join(flags)}; {so}"
    return None, "compiling " + SOURCE + " failed: " + "; ".join(errors)


def lib():
    """The loaded library (ctypes.CDLL), or None when it cannot be had."""
    if not _state["tried"]:
        with _lock:
            if not _state["tried"]:
                _state["lib"], _state["why"] = _load()
                _state["tried"] = True
    return _state["lib"]


def status():
    """One line: whether the native kernels are in use, and why (not)."""
    return ("in use: " if lib() is not None else "not in use: ") + _state["why"]
