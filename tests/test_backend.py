"""Devices and backends: resolution, probing, errors, the shared backend surface."""
import os
import subprocess
import sys
import textwrap

import pytest

import gpudl
from gpudl import backend
from gpudl.backend import numpy_backend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_numpy_backend_exposes_the_whole_api():
    missing = [n for n in backend.BACKEND_API if not hasattr(numpy_backend, n)]
    assert not missing, f"numpy backend lacks {missing}"


def test_backends_expose_the_same_names():
    from gpudl.backend import cupy_backend
    import numpy, scipy.special
    built = cupy_backend.make_backend(numpy, lambda f: None, scipy.special, "probe")
    public = lambda ns: {n for n in vars(ns) if not n.startswith("_")}
    cpu_names = {n for n in public(numpy_backend) if n in backend.BACKEND_API or callable(getattr(numpy_backend, n))}
    assert set(backend.BACKEND_API) <= public(built)
    assert set(backend.BACKEND_API) <= cpu_names
    extra_cuda = public(built) - set(backend.BACKEND_API)
    assert not extra_cuda, f"CUDA backend exposes names outside BACKEND_API: {extra_cuda}"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_relu_matches_maximum(dtype):
    """The shared-zeros relu: same values as np.maximum(a, 0), NaN and
    infinities kept, any shape and strides, the zeros grown when needed."""
    import numpy as np
    r = np.random.default_rng(0)
    for shape in [(3,), (4, 5, 6), (70000,), (2, 3, 200, 300)]:
        a = r.standard_normal(shape).astype(dtype)
        a.reshape(-1)[:3] = [np.nan, np.inf, -np.inf]
        for v in (a, a[..., ::2], a.T):
            got = numpy_backend.relu(v)
            assert got.dtype == v.dtype and got.shape == v.shape
            np.testing.assert_array_equal(got, np.maximum(v, 0))
    out = np.empty(5, dtype)
    assert numpy_backend.relu(np.arange(-2, 3).astype(dtype), out=out) is out
    np.testing.assert_array_equal(out, [0, 0, 0, 1, 2])
    np.testing.assert_array_equal(numpy_backend.relu(np.array([-3, 4])), [0, 4])


def test_resolve_cpu_and_errors():
    assert str(gpudl.device("cpu")) == "cpu"
    assert gpudl.device("cpu") == "cpu"
    assert gpudl.device(gpudl.device("cpu")) is gpudl.device("cpu")
    with pytest.raises(ValueError, match="'auto', 'cpu', 'cuda'"):
        gpudl.device("tpu")
    with pytest.raises(ValueError, match="cuda:N"):
        gpudl.device("cuda:x")
    with pytest.raises(TypeError):
        gpudl.device(3)


@pytest.mark.skipif(gpudl.cuda_available(), reason="a GPU answers here")
def test_asking_for_cuda_without_one_says_why():
    with pytest.raises(gpudl.DeviceError, match="CUDA is not usable: .+"):
        gpudl.device("cuda")
    with pytest.raises(gpudl.DeviceError):
        gpudl.zeros(2, device="cuda:0")


def _run(code, env_extra=None, fake_cupy=None, tmp_path=None):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("GPUDL_DEVICE", None)
    if fake_cupy is not None:
        d = tmp_path / "fake"
        (d / "cupy" / "cuda").mkdir(parents=True)
        (d / "cupy" / "__init__.py").write_text("__version__ = '99.0'\nfrom . import cuda\n")
        (d / "cupy" / "cuda" / "__init__.py").write_text("from . import runtime\n")
        (d / "cupy" / "cuda" / "runtime.py").write_text(textwrap.dedent(fake_cupy))
        env["PYTHONPATH"] = f"{d}{os.pathsep}{ROOT}"
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


def test_auto_picks_cpu_and_says_once_why_when_the_driver_is_too_old(tmp_path):
    fake = """
        class CUDARuntimeError(RuntimeError):
            pass
        def getDeviceCount():
            raise CUDARuntimeError('cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version')
    """
    r = _run("import gpudl; print(gpudl.device('auto')); print(gpudl.device('auto')); "
             "print(gpudl.cuda_available())\n"
             "try:\n  gpudl.device('cuda')\nexcept gpudl.DeviceError as e: print('ERR', e)",
             fake_cupy=fake, tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:3] == ["cpu", "cpu", "False"]
    assert "InsufficientDriver" in lines[3] and lines[3].startswith("ERR")
    assert r.stderr.count("gpudl: using the CPU") == 1
    assert "InsufficientDriver" in r.stderr


def test_auto_with_no_device(tmp_path):
    r = _run("import gpudl; print(gpudl.device('auto'))",
             fake_cupy="def getDeviceCount():\n    return 0\n", tmp_path=tmp_path)
    assert r.stdout.strip() == "cpu"
    assert "no CUDA device" in r.stderr


def test_import_without_cupy_and_env_override(tmp_path):
    r = _run("import sys; sys.modules['cupy'] = None\nimport gpudl\nprint(gpudl.device('auto'))",
             env_extra={"GPUDL_DEVICE": "cpu"})
    assert r.returncode == 0 and r.stdout.strip() == "cpu"
    assert "using the CPU" not in r.stderr      # GPUDL_DEVICE chose; no probe message
    r = _run("import gpudl; print(gpudl.device('auto'))", env_extra={"GPUDL_DEVICE": "bogus"})
    assert r.returncode != 0 and "bogus" in r.stderr


def test_mixing_devices_raises_naming_both(device):
    if device.type == "cpu":
        pytest.skip("needs a second device")
    a = gpudl.ones(2, device=device)
    b = gpudl.ones(2)
    with pytest.raises(ValueError, match=f"({device}.*cpu|cpu.*{device})"):
        a + b
    with pytest.raises(ValueError, match="cpu"):
        gpudl.matmul(a.reshape(1, 2), b.reshape(2, 1))
