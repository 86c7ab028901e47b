"""Run pytest in a child process whose emulated kernels, and the CPU's native
kernels (``kernels/cpu_native.c``), are built with AddressSanitizer.

    python -m gpudl.testing.asan_run tests/test_kernels_emulated.py [pytest args...]

An out-of-bounds read or write in any ``.cu`` kernel or in the native C then
aborts the run with ASan's report, so CI fails instead of passing on a silent
memory error.
"""
from __future__ import annotations

import os
import subprocess
import sys

from .cuda_emulator import EmulatorError, asan_env


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        env = dict(os.environ, **asan_env())
    except EmulatorError as e:
        print(f"asan_run: cannot build with AddressSanitizer here: {e}", file=sys.stderr)
        return 1
    env["GPUDL_NATIVE_CFLAGS"] = " ".join(filter(None, [
        env.get("GPUDL_NATIVE_CFLAGS"), "-fsanitize=address -fno-omit-frame-pointer"]))
    # the nvcc compile checks need no sanitizer, and ASan's allocator ignores
    # the malloc tuning the page-fault test checks: skip them in this pass
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "-k", "not nvcc and not page_faults", *argv]
    print("asan_run:", " ".join(cmd), flush=True)
    return subprocess.call(cmd, env=env)


if __name__ == "__main__":
    sys.exit(main())
