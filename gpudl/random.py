"""Random state: one seed for every device.

Tensors made by the creation functions (``rand``, ``randn``, ``randint``,
layer initialisation) are drawn by the CPU generator and then moved, so one
seed gives the same values on every device.  Ops that draw inside a step
(dropout masks) use a generator that lives on the tensor's device, seeded
from the same seed, so they stay on the device and are reproducible there.
"""
from __future__ import annotations

import numbers
import zlib

import numpy

_seed = None
_cpu_gen = numpy.random.default_rng()
_device_gens = {}


def manual_seed(seed):
    """Seed every generator gpudl uses, on every device."""
    global _seed, _cpu_gen
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"manual_seed: expected a non-negative int, got {seed!r}")
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"manual_seed: expected a non-negative int, got {seed}")
    _seed = seed
    _cpu_gen = numpy.random.default_rng(seed)
    _device_gens.clear()


def initial_seed():
    return _seed


def cpu_generator():
    """The numpy Generator behind creation and initialisation."""
    return _cpu_gen


def device_generator(device):
    """The generator that lives on ``device`` (numpy- or cupy-style Generator)."""
    key = (device.type, device.index)
    gen = _device_gens.get(key)
    if gen is None:
        if _seed is None:
            seed = int(_cpu_gen.integers(0, 2**63 - 1))
        else:
            # a stable key (hash() of a str changes with PYTHONHASHSEED)
            seed = (_seed * 1_000_003 + 17 + zlib.crc32(f"{key[0]}:{key[1]}".encode()) % 1000) % 2**63
        gen = device.backend.default_rng(seed)
        _device_gens[key] = gen
    return gen


def get_rng_state():
    """The generators' states (a dict of plain values) for checkpoints.

    Holds the CPU generator and every device generator with a NumPy bit
    generator (the CPU and emulated devices); CuPy's device generators are
    reseeded from the seed on restore.
    """
    devices = {f"{t}:{i}": g.bit_generator.state for (t, i), g in _device_gens.items()
               if hasattr(g, "bit_generator")}
    return {"seed": _seed, "cpu": _cpu_gen.bit_generator.state, "devices": devices}


def set_rng_state(state):
    """Restore what :func:`get_rng_state` returned."""
    if not hasattr(state, "get") or "cpu" not in state:
        raise TypeError(f"set_rng_state: expected the dict that get_rng_state() returns, got {type(state).__name__}")
    global _seed
    _seed = state.get("seed")
    _cpu_gen.bit_generator.state = state["cpu"]
    _device_gens.clear()
    for name, st in (state.get("devices") or {}).items():
        t, i = name.split(":")
        g = numpy.random.default_rng()
        g.bit_generator.state = st
        _device_gens[(t, None if i == "None" else int(i))] = g
