"""Run CUDA C kernels on the CPU, behind the same calls as ``cupy.RawModule``.

CI has no GPU, so the GPU backend runs there with ``xp = numpy`` and kernels
compiled by this module: the exact ``.cu`` sources and launch code run on
every commit.  Standalone on purpose (stdlib, numpy, ctypes)::

    mod = compile_module(source, name="conv.cu", include_dirs=[kernels_dir])
    fn = mod.get_function("conv2d_forward")
    fn((blocks,), (256,), (x, w, y, numpy.int32(n)), shared_mem=0)

How it works: ``cuda_emu.h`` (force-included) maps CUDA's qualifiers and
intrinsics onto C++; ``extern __shared__ T a[];`` is rewritten here into a
reference to the pointer to the launch's dynamic shared memory; for every ``extern "C"``
``__global__`` kernel a C entry ``__emu_launch_<name>`` is appended that
unpacks a ``void**`` argument list as ``cuLaunchKernel`` does (a C++ template
over the kernel's own parameter types), and ``__emu_sig_<name>`` describes
the parameters so arguments can be checked before launch.  Kernels whose
code (with the device functions they call) never synchronises run their
threads as a plain loop; the others run each thread of a block as a fiber.

The shared library is cached on disk (``$GPUDL_EMU_CACHE``, else
``gpudl/emu`` in ``$XDG_CACHE_HOME`` or ``~/.cache``) by a hash of everything that goes into it, and in
memory, so a second ``compile_module`` never runs the compiler.
"""
import ctypes
import functools
import hashlib
import operator
import os
import platform
import re
import shlex
import shutil
import subprocess
import tempfile
import threading

import numpy

__all__ = ["compile_module", "asan_env", "EmulatorError", "EmulatedModule",
           "EmulatedFunction", "stats"]

HEADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cuda_emu.h")
FLAGS = ("-O2", "-std=c++17", "-shared", "-fPIC", "-fno-strict-aliasing", "-fno-math-errno")
if platform.machine() in ("x86_64", "AMD64"):  # the fiber switch is not CET shadow-stack safe
    FLAGS += ("-fcf-protection=none",)
ASAN_FLAGS = ("-fsanitize=address", "-fno-omit-frame-pointer")
MAX_THREADS, MAX_BLOCK, MAX_GRID = 1024, (1024, 1024, 64), (2**31 - 1, 65535, 65535)
DEFAULT_DYNAMIC_SMEM = 48 * 1024      # above this CUDA needs an opt-in attribute
MAX_DYNAMIC_SMEM = 227 * 1024         # sm_90's per-block maximum

stats = {"compiles": 0, "disk_hits": 0, "memory_hits": 0}
_modules = {}
_launch_locks = {}
_lock = threading.Lock()


class EmulatorError(RuntimeError):
    """A compile or launch failure, as CUDA would report it."""


class KernelNotFoundError(EmulatorError, KeyError):
    """``get_function`` was asked for a kernel the module does not define."""
    __str__ = RuntimeError.__str__


# ---- reading the source -----------------------------------------------------

_COMMENT = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"', re.S)
_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"', re.M)
_DYN_SMEM = re.compile(r"\bextern\s+__shared__\s+((?:__align__\s*\(\s*\d+\s*\)\s*)?)"
                       r"([^;\[\]]*?)\s*\b(\w+)\s*\[\s*\]\s*;")
_SYNC = re.compile(r"\b(?:__syncthreads\w*|__syncwarp|__shfl\w*|__ballot_sync|__any_sync|"
                   r"__all_sync|__activemask)\b")
_KERNEL = re.compile(r"\b__global__\s+(?:__launch_bounds__\s*\(([^()]*)\)\s*)?void\s+"
                     r"(?:__launch_bounds__\s*\(([^()]*)\)\s*)?(\w+)\s*\(")
_EXTERN_C_BLOCK = re.compile(r'\bextern\s+"C"\s*\{')
_PAREN_OPEN_BRACE = re.compile(r"\)[\s\w]*\{")


def _strip_comments(text):
    """Blank comments (keeping strings and newlines) so regexes see only code."""
    return _COMMENT.sub(lambda m: m.group(0) if m.group(0)[0] == '"'
                        else re.sub(r"[^\n]", " ", m.group(0)), text)


def _read_includes(text, include_dirs, found, here=None, here_rel=""):
    """Collect quoted #includes recursively: {copy path in the build dir: (path, text)}.

    A header found next to its includer is copied next to the includer's copy,
    one found on `include_dirs` to the build dir's top, so the compiler meets
    the (rewritten) copies first, as it would have met the originals.
    """
    for inc in _INCLUDE.findall(_strip_comments(text)):
        for d in ([here] if here else []) + list(include_dirs):
            path = os.path.join(d, inc)
            if os.path.isfile(path):
                break
        else:
            continue  # the compiler will report it
        rel = os.path.normpath(os.path.join(here_rel, inc) if d == here else inc)
        if rel in found:
            continue
        with open(path) as f:
            found[rel] = (os.path.abspath(path), f.read())
        _read_includes(found[rel][1], include_dirs, found, os.path.dirname(path),
                       os.path.dirname(rel))
    return found


def _rewrite_dynamic_shared(text):
    """``extern __shared__ T a[];`` -> ``T* const& a = <the launch's buffer>;`` (same line).

    A reference to the header's pointer, so that it also works at file scope.
    """
    return _DYN_SMEM.sub(lambda m: "%s* const& %s = reinterpret_cast<%s* const&>(__emu_dyn_smem);"
                         % (m.group(2), m.group(3), m.group(2)), text)


def _close(code, start, pair="{}"):
    """Index just past the bracket matching the one at `start` (``pair`` = open, close)."""
    depth, step = 0, 1 if code[start] == pair[0] else -1
    j = start
    while 0 <= j < len(code):
        depth += {pair[0]: step, pair[1]: -step}.get(code[j], 0)
        j += step
        if depth == 0:
            break
    return j


def _function_bodies(code):
    """Function bodies {name: [body, ...]} and the code outside them.

    Scopes that are not functions (namespace, struct, extern "C" { }) are
    entered; a function body is a ``{`` right after ``)``.
    """
    bodies, outside, i, pos = {}, [], 0, 0
    while True:
        m = _PAREN_OPEN_BRACE.search(code, pos)
        if not m:
            break
        start = m.end() - 1
        opened = []  # '{' in code[pos:start] left open: a scope to look inside
        for k in range(pos, start):
            if code[k] == "{":
                opened.append(k)
            elif code[k] == "}" and opened:
                opened.pop()
        if opened:
            pos = opened[0] + 1
            continue
        end = _close(code, start)
        k = _close(code, m.start(), "()")  # back to the '(' of the parameter list
        name = re.search(r"(\w+)\s*$", code[max(0, k - 200):k + 1])
        outside.append(code[i:start])
        bodies.setdefault(name.group(1) if name else "", []).append(code[start:end])
        i = pos = end
    outside.append(code[i:])
    return bodies, "".join(outside)


def _kernels(code):
    """extern "C" __global__ kernels: {name: (needs_fibers, launch-bounds max threads)}."""
    spans = [(m.start(), _close(code, m.end() - 1)) for m in _EXTERN_C_BLOCK.finditer(code)]
    bodies, outside = _function_bodies(code)
    # a sync outside any named function (a macro, a functor's operator()): be conservative
    whole_file = bool(_SYNC.search(outside)) or any(_SYNC.search(b) for b in bodies.get("", ()))
    kernels = {}
    for m in _KERNEL.finditer(code):
        head = code[max(0, m.start() - 40):m.start()]
        if not (re.search(r'\bextern\s+"C"[\s\w]*$', head) or
                any(a <= m.start() < b for a, b in spans)):
            continue
        bounds = (m.group(1) or m.group(2) or "").split(",")[0].strip()
        kernels[m.group(3)] = (whole_file or _calls_sync(m.group(3), bodies),
                               int(bounds) if bounds.isdigit() else MAX_THREADS)
    return kernels


def _calls_sync(name, bodies):
    """Whether `name` or a function it (transitively) mentions synchronises."""
    seen, todo = set(), [name]
    while todo:
        fn = todo.pop()
        if fn in seen:
            continue
        seen.add(fn)
        for body in bodies.get(fn, ()):
            if _SYNC.search(body):
                return True
            todo.extend(w for w in set(re.findall(r"\b\w+\b", body)) if w in bodies)
    return False


# ---- compiling --------------------------------------------------------------

def _compiler():
    for cxx in (os.environ.get("CXX"), "g++", "c++"):
        if cxx and shutil.which(cxx):
            return shutil.which(cxx)
    raise EmulatorError("the CUDA emulator needs a C++ compiler (g++ or c++) on PATH")


def _asan_loaded():
    return hasattr(ctypes.CDLL(None), "__asan_init")


def asan_env():
    """Environment additions for a Python process that can load ASan builds.

    Sets ``LD_PRELOAD`` to the compiler's libasan, ``ASAN_OPTIONS`` to
    ``detect_leaks=0`` (CPython's own allocations are not leaks), and
    ``GPUDL_EMU_ASAN=1`` so ``compile_module`` builds with ASan by default.
    """
    lib = subprocess.run([_compiler(), "-print-file-name=libasan.so"], capture_output=True,
                         text=True).stdout.strip()
    if not os.path.isabs(lib) or not os.path.exists(lib):
        raise EmulatorError("libasan.so not found for %s" % _compiler())
    preload = " ".join(filter(None, [os.path.realpath(lib), os.environ.get("LD_PRELOAD")]))
    return {"LD_PRELOAD": preload, "ASAN_OPTIONS": "detect_leaks=0", "GPUDL_EMU_ASAN": "1"}


def _cache_dir():
    from ..backend._shared import cache_dir
    return cache_dir("GPUDL_EMU_CACHE", "emu")


def compile_module(source, name="<string>", include_dirs=(), asan=None):
    """Compile CUDA C `source` for the CPU and return an :class:`EmulatedModule`.

    `include_dirs` resolve ``#include "x.cuh"``.  `asan=None` reads
    ``GPUDL_EMU_ASAN=1``; an ASan build loads only in a process started with
    :func:`asan_env`.  ``$GPUDL_EMU_CXXFLAGS`` adds compiler flags and ``$CXX``
    picks the compiler (both part of the cache key).  Raises
    :class:`EmulatorError` naming `name` with the compiler's log when
    compilation fails.
    """
    if asan is None:
        asan = os.environ.get("GPUDL_EMU_ASAN") == "1"
    if asan and not _asan_loaded():
        raise EmulatorError(
            "compile_module(asan=True) needs libasan loaded first: run Python with "
            "LD_PRELOAD=$(g++ -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 "
            "(see gpudl.testing.cuda_emulator.asan_env())")
    include_dirs = [os.path.abspath(d) for d in include_dirs]
    cxx = _compiler()
    headers = _read_includes(source, include_dirs, {})
    flags = FLAGS + (ASAN_FLAGS if asan else ())
    # extra flags, e.g. "-O0 -g" to debug a kernel, "-DEMU_STACK_KB=256" for bigger fiber stacks
    flags += tuple(shlex.split(os.environ.get("GPUDL_EMU_CXXFLAGS", "")))
    h = hashlib.sha256()
    with open(HEADER, "rb") as f1, open(__file__, "rb") as f2:
        parts = [f1.read(), f2.read(), cxx.encode(), repr(flags).encode(), source.encode()]
    for rel in sorted(headers):
        parts += [rel.encode(), headers[rel][1].encode()]
    for p in parts:
        h.update(len(p).to_bytes(8, "little") + p)
    key = h.hexdigest()[:32] + ("-asan" if asan else "")
    with _lock:
        if key in _modules:
            stats["memory_hits"] += 1
            return _modules[key]
        code = _strip_comments(source + "\n" + "\n".join(t for _, t in headers.values()))
        kernels = _kernels(code)
        so = os.path.join(_cache_dir(), key + ".so")
        if os.path.exists(so):
            stats["disk_hits"] += 1
        else:
            _build(cxx, flags, source, name, headers, include_dirs, kernels, so)
        mod = _modules[key] = EmulatedModule(so, name, kernels)
        return mod


def _build(cxx, flags, source, name, headers, include_dirs, kernels, so):
    glue = ['\n#line 1 "<cuda emulator launch glue>"']
    for k, (fibers, _) in kernels.items():
        glue.append(
            'extern "C" __attribute__((visibility("default"))) int __emu_launch_%s('
            'const unsigned* g, const unsigned* b, size_t smem, void** args, int nargs) '
            '{ return emu::Kernel<&%s>::launch(g, b, smem, args, nargs, %d); }\n'
            'extern "C" __attribute__((visibility("default"))) const char* __emu_sig_%s() '
            '{ return emu::Kernel<&%s>::signature(); }' % (k, k, int(fibers), k, k))
    build = tempfile.mkdtemp(prefix="gpudl-emu-")
    try:
        # Headers are copied (dynamic shared memory rewritten) so that quoted
        # includes find the copies first; #line keeps diagnostics pointing home.
        for rel, (path, text) in headers.items():
            if rel.startswith(".."):
                continue  # compiled from the original, dynamic shared memory not rewritten
            dst = os.path.join(build, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with open(dst, "w") as f:
                f.write('#line 1 "%s"\n%s' % (path, _rewrite_dynamic_shared(text)))
        src = os.path.join(build, "module.cu")
        with open(src, "w") as f:
            f.write('#line 1 "%s"\n%s\n%s\n' % (name.replace('"', "'").replace("\\", "/"),
                                              _rewrite_dynamic_shared(source), "\n".join(glue)))
        tmp = "%s.%d.tmp" % (so, os.getpid())
        cmd = [cxx, *flags, "-include", HEADER, "-I", build]
        cmd += [a for d in include_dirs for a in ("-I", d)] + ["-x", "c++", src, "-o", tmp]
        stats["compiles"] += 1
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise EmulatorError("CUDA emulator: compiling %s failed:\n%s" % (name, r.stderr))
        os.replace(tmp, so)
    finally:
        shutil.rmtree(build, ignore_errors=True)


# ---- launching --------------------------------------------------------------

class EmulatedModule:
    """A compiled module: ``get_function(name)`` like ``cupy.RawModule``."""

    def __init__(self, path, name, kernels):
        self.path, self.name, self.kernels = path, name, kernels
        self._lib = ctypes.CDLL(path)
        # kernels share the library's globals (one library per path: dlopen)
        self._lock = _launch_locks.setdefault(path, threading.Lock())
        self._functions = {}

    def get_function(self, name):
        if name not in self.kernels:
            raise KernelNotFoundError("no extern \"C\" __global__ kernel %r in %s; it has: %s" % (
                name, self.name, ", ".join(sorted(self.kernels)) or "none"))
        if name not in self._functions:
            self._functions[name] = EmulatedFunction(self, name)
        return self._functions[name]


_LAUNCH_ARGTYPES = [ctypes.c_uint * 3, ctypes.c_uint * 3, ctypes.c_size_t,
                    ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]


@functools.lru_cache(maxsize=None)
def _compatible(param, dtype):
    """Whether a parameter code ("f4", "i8", "x16", ...) takes values of `dtype`.

    Sizes must match; floats take only floats; int, unsigned and bool types
    of one size mix (CUDA reads the same bits); other types ("x") take any.
    """
    kind = {"f": "f", "b": "i", "i": "i", "u": "i"}.get(dtype.kind, "x")
    return (param[1:] == str(dtype.itemsize) and
            {"u": "i", "b": "i"}.get(param[0], param[0]) in (kind, "x"))


class EmulatedFunction:
    """One kernel, called like ``cupy.RawKernel``: ``fn(grid, block, args, shared_mem=0)``.

    ``max_dynamic_shared_size_bytes`` mirrors CuPy's attribute: above 48 KiB
    of dynamic shared memory a launch fails unless it was raised first.
    """

    def __init__(self, module, name):
        self.module, self.name = module, name
        self.needs_fibers, self.max_threads = module.kernels[name]
        self._launch = getattr(module._lib, "__emu_launch_" + name)
        self._launch.argtypes, self._launch.restype = _LAUNCH_ARGTYPES, ctypes.c_int
        sig = getattr(module._lib, "__emu_sig_" + name)
        sig.restype = ctypes.c_char_p
        self.params = sig().decode().split()
        self.max_dynamic_shared_size_bytes = DEFAULT_DYNAMIC_SMEM
        self.max_threads_per_block = min(MAX_THREADS, self.max_threads)   # as CuPy reports it

    def _dims(self, what, dims, limits):
        if isinstance(dims, (tuple, list)):
            if not 1 <= len(dims) <= 3:
                raise EmulatorError("%s: %s must have 1 to 3 dimensions, got %r"
                                    % (self.name, what, dims))
            dims = tuple(operator.index(d) for d in dims) + (1,) * (3 - len(dims))
        else:
            dims = (operator.index(dims), 1, 1)
        for d, lim in zip(dims, limits):
            if not 1 <= d <= lim:
                raise EmulatorError(
                    "%s: invalid launch configuration: %s=%r (dimensions must be in 1..%s)"
                    % (self.name, what, dims, "/".join(map(str, limits))))
        return dims

    def _arg(self, i, a, param):
        def where():        # the message is built only for an error (this runs per argument and launch)
            return "%s argument %d (kernel parameter %s)" % (self.name, i, param)
        if isinstance(a, numpy.ndarray):
            if not a.flags.c_contiguous:
                raise ValueError("%s: array is not C-contiguous (a kernel gets only a pointer; "
                                 "pass numpy.ascontiguousarray(x))" % where())
            if param[0] != "p":
                raise TypeError("%s: got an array where the kernel takes a value" % where())
            if param != "p?" and not _compatible(param[1:], a.dtype):
                raise TypeError("%s: array of %s does not match the pointer's element type"
                                % (where(), a.dtype))
            return ctypes.c_void_p(a.ctypes.data)
        if isinstance(a, (bool, int, float)) and not isinstance(a, numpy.generic):
            raise TypeError("%s: Python %s %r; pass a numpy scalar such as numpy.int32 or "
                            "numpy.float32 (CuPy would pass it as a 64-bit long long/double)"
                            % (where(), type(a).__name__, a))
        if isinstance(a, numpy.generic):
            if param[0] == "p" or not _compatible(param, a.dtype):
                raise TypeError("%s: numpy.%s does not match" % (where(), a.dtype))
            data = a.tobytes()
            return ctypes.create_string_buffer(data, max(8, len(data)))
        raise TypeError("%s: unsupported argument type %s" % (where(), type(a).__name__))

    def __call__(self, grid, block, args, shared_mem=0, stream=None):
        """Launch: checks the configuration and arguments first, as CUDA (or a
        careful wrapper) would; `stream` is accepted for CuPy compatibility."""
        grid = self._dims("grid", grid, MAX_GRID)
        block = self._dims("block", block, MAX_BLOCK)
        threads = block[0] * block[1] * block[2]
        if threads > min(MAX_THREADS, self.max_threads):
            raise EmulatorError(
                "%s: invalid launch configuration: %d threads per block (limit %d%s)"
                % (self.name, threads, min(MAX_THREADS, self.max_threads),
                   ", __launch_bounds__" if self.max_threads < MAX_THREADS else ""))
        shared_mem = operator.index(shared_mem)
        limit = min(self.max_dynamic_shared_size_bytes, MAX_DYNAMIC_SMEM)
        if not 0 <= shared_mem <= limit:
            raise EmulatorError(
                "%s: %d bytes of dynamic shared memory exceed the limit of %d%s" % (
                    self.name, shared_mem, limit, " (set max_dynamic_shared_size_bytes to opt in,"
                    " up to %d)" % MAX_DYNAMIC_SMEM if limit < MAX_DYNAMIC_SMEM else ""))
        if not isinstance(args, (tuple, list)):
            raise TypeError("%s: args must be a tuple, got %s" % (self.name, type(args).__name__))
        if len(args) != len(self.params):
            raise TypeError("%s takes %d arguments, got %d"
                            % (self.name, len(self.params), len(args)))
        held = [self._arg(i, a, p) for i, (a, p) in enumerate(zip(args, self.params))]
        argv = (ctypes.c_void_p * max(1, len(held)))(*[ctypes.addressof(h) for h in held])
        with self.module._lock:
            rc = self._launch((ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block),
                              shared_mem, argv, len(held))
        if rc:
            why = {1: "argument count mismatch", 3: "out of memory",
                   4: "a warp shuffle read a lane that has exited or does not exist "
                      "(undefined on a GPU)",
                   5: "threads of a block met at different __syncthreads() calls "
                      "(divergent code: undefined on a GPU)",
                   2: "deadlock: threads wait at different barriers "
                      "(__syncthreads/warp operation in divergent code)"}.get(rc, rc)
            raise EmulatorError("%s: launch failed: %s" % (self.name, why))
