"""Test helpers: gradcheck, the emulated GPU device, the CUDA emulator.

This is the top floor: it may import anything; nothing in gpudl imports it.
The emulated device runs the CUDA backend's own code (``cupy_backend``) with
``xp = numpy`` and the ``.cu`` kernels compiled for the CPU by
:mod:`gpudl.testing.cuda_emulator`, so CI exercises every kernel and launch
wrapper without a GPU.
"""
from __future__ import annotations

import shutil

from .gradcheck import gradcheck  # noqa: F401

_emulated = None


def emulated_device_unavailable_reason():
    """'' when the emulated GPU can be built here, else why not."""
    if not (shutil.which("g++") or shutil.which("c++")):
        return "no C++ compiler (g++ or c++) on PATH for the CUDA emulator"
    return ""


def emulated_backend():
    """The GPU backend with ``xp = numpy`` and emulator-compiled kernels."""
    import numpy
    import scipy.special
    from ..backend import cupy_backend
    from ..backend.kernels import kernel_dir, read_source
    from .cuda_emulator import compile_module

    modules = {}

    def get_module(filename):
        mod = modules.get(filename)
        if mod is None:
            mod = modules[filename] = compile_module(
                read_source(filename), name=filename, include_dirs=[kernel_dir()])
        return mod

    return cupy_backend.make_backend(numpy, get_module, scipy.special, "emulated")


def emulated_device():
    """A Device of type "emulated": the CUDA code path, run on the CPU."""
    global _emulated
    if _emulated is None:
        why = emulated_device_unavailable_reason()
        if why:
            from ..backend import DeviceError
            raise DeviceError(f"the emulated GPU is unavailable: {why}")
        from ..backend import Device
        _emulated = Device("emulated", None, emulated_backend())
    return _emulated
