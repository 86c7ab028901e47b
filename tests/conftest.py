"""The ``device`` fixture: every device that answers; the others are skipped with a reason."""

import pytest

import gpudl


def _emulator_reason():
    try:
        from gpudl.testing import emulated_device_unavailable_reason
    except ImportError as e:
        return f"the CUDA emulator is not built ({e})"
    return emulated_device_unavailable_reason()


def _device_params():
    params = [pytest.param("cpu", id="cpu")]
    why = _emulator_reason()
    params.append(pytest.param("emulated", id="emulated",
                               marks=pytest.mark.skipif(bool(why), reason=why or "")))
    cuda_why = gpudl.cuda_unavailable_reason()
    params.append(pytest.param("cuda", id="cuda",
                               marks=pytest.mark.skipif(bool(cuda_why), reason=f"no CUDA: {cuda_why}")))
    return params


def get_device(name):
    if name == "emulated":
        from gpudl.testing import emulated_device
        return emulated_device()
    return gpudl.device(name)


@pytest.fixture(scope="module")
def emu():
    """The emulated GPU's backend (the CUDA backend's code on the CUDA emulator)."""
    why = _emulator_reason()
    if why:
        pytest.skip(why)
    from gpudl.testing import emulated_backend
    return emulated_backend()


@pytest.fixture(params=_device_params())
def device(request):
    return get_device(request.param)


@pytest.fixture(autouse=True)
def _seed():
    gpudl.manual_seed(1234)
    yield
