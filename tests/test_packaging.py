"""The wheel carries the CUDA sources, and an installed copy finds them."""
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    src = tmp_path_factory.mktemp("src") / "gpudl"
    # build from a copy so no build/ or egg-info litter lands in the tree
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__", "runs"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        pytest.fail(f"building the wheel failed:\n{r.stdout}\n{r.stderr}")
    wheels = list(out.glob("gpudl-*.whl"))
    assert len(wheels) == 1
    return wheels[0]


def test_wheel_contains_every_kernel_source(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    sources = sorted(f for f in os.listdir(os.path.join(ROOT, "kernels")) if f.endswith((".cu", ".cuh")))
    assert sources, "no CUDA sources in kernels/"
    for f in sources:
        assert f"gpudl/_kernels/{f}" in names, f"{f} is missing from the wheel"
    assert "gpudl/testing/cuda_emu.h" in names
    pkg = os.path.join(ROOT, "gpudl")
    for folder, _, files in os.walk(pkg):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), ROOT).replace(os.sep, "/")
                assert rel in names, f"{rel} is missing from the wheel (add its package to pyproject.toml)"


def test_installed_copy_finds_its_kernels(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, timeout=300)
    code = ("import gpudl.backend.kernels as k, os; d = k.kernel_dir(); print(d); "
            "print(sorted(f for f in os.listdir(d) if f.endswith('.cu')))")
    env = dict(os.environ, PYTHONPATH=str(target))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    where, files = r.stdout.splitlines()
    assert where.startswith(str(target)), f"the installed copy read kernels from {where}"
    assert "conv2d.cu" in files
