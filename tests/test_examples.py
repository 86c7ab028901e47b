"""Every example starts (--help); the quick ones run to the end and check their own results."""
import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "*.py")))


def _run(args, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, GPUDL_DEVICE="cpu", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)


@pytest.mark.parametrize("path", EXAMPLES, ids=[os.path.basename(p) for p in EXAMPLES])
def test_example_help(path, tmp_path):
    r = _run([path, "--help"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "usage" in r.stdout.lower()


@pytest.mark.parametrize("name,args,expect", [
    ("spirals.py", [], "final training accuracy"),            # exits non-zero below 90%
    ("linear_scores.py", ["--out", "out"], "softmax"),
    ("knn_toy.py", ["--out", "out"], "k = 3 and k = 5 disagree"),
])
def test_quick_examples_run(name, args, expect, tmp_path):
    r = _run([os.path.join(ROOT, "examples", name), *args], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert expect in r.stdout
