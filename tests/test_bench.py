"""The benchmark command runs and reports (timings are never asserted)."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench(*args):
    r = subprocess.run([sys.executable, "-m", "gpudl.bench", *args], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT), timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_bench_ops_json():
    out = json.loads(_bench("ops", "--repeat", "1", "--no-torch", "--json"))
    assert out["bench"] == "ops" and out["device"] == "cpu"
    names = [r["name"] for r in out["results"]]
    assert any("conv2d" in n for n in names) and any("max_pool2d" in n for n in names)
    assert all(r["gpudl_ms"] > 0 for r in out["results"])


def test_bench_models_and_knn():
    out = json.loads(_bench("models", "--models", "mlp,lenet5", "--repeat", "1", "--inner", "1",
                            "--no-torch", "--json"))
    assert [r["name"] for r in out["results"]] == ["mlp train step", "lenet5 train step"]
    text = _bench("knn", "--train", "300", "--query", "30", "--dim", "16", "--repeat", "1", "--no-sklearn")
    assert "gpudl" in text


def test_bench_all_on_a_device_that_does_not_answer_says_why():
    import gpudl
    if gpudl.cuda_available():
        import pytest
        pytest.skip("a GPU answers here")
    r = subprocess.run([sys.executable, "-m", "gpudl.bench", "all", "--device", "cuda", "--json"],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=600)
    assert r.returncode == 2
    assert r.stderr.count("CUDA is not usable") == 3       # ops, models and knn each say so
    assert json.loads(r.stdout) == {"bench": "all", "parts": []}


def test_gpu_target_cases_and_bandwidth_rows():
    """The GPU issue's target cases are built as stated, and bandwidth rows are derived right."""
    from gpudl import bench
    from gpudl.backend import numpy_backend
    cases = bench._target_cases(numpy_backend, None, "cpu")
    assert [c["shape"] for c in cases] == ["128x16x32x32", "128x16x32x32", "128x32x16x16", "128x32x16x16",
                                           "128x64x8x8", "256x64x64x64", "256x64x64x64", "8192x4096"]
    assert cases[5]["bytes"] == 256 * 2**20 * 3 and cases[7]["bytes"] == 3 * 8192 * 4096 * 4
    results = [{"name": c["name"], "shape": c["shape"], "gpudl_ms": 2.0, "torch_ms": 1.0, "ratio": 2.0}
               for c in cases]
    results[0].update(gpudl_ms=8.0, ratio=8.0)
    bench._add_bandwidth(results, cases, ceiling=400.0)
    assert results[7]["gbps"] == 3 * 8192 * 4096 * 4 / 2e-3 / 1e9
    assert results[7]["pct_of_copy"] == 100 * results[7]["gbps"] / 400.0
    mean = results[-1]
    assert mean["shape"] == "geometric mean" and abs(mean["ratio"] - 8.0 ** (1 / 5) * 2.0 ** (4 / 5)) < 1e-12


def test_bench_all_json_survives_a_stop():
    """`timeout` sends SIGTERM: the parts done so far still come out as one JSON document."""
    import signal
    import time
    p = subprocess.Popen([sys.executable, "-m", "gpudl.bench", "all", "--repeat", "1", "--json", "--no-torch",
                          "--no-targets"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    time.sleep(4)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=120)
    doc = json.loads(out)
    assert p.returncode == 130 and doc["stopped"].startswith("during ")
    assert doc["bench"] == "all" and all(part["bench"] in ("ops", "models") for part in doc["parts"])


def test_all_hands_device_and_repeat_to_each_part(monkeypatch):
    from gpudl import bench, bench_knn
    calls = []
    monkeypatch.setattr(bench, "main", lambda argv: calls.append(("bench", argv)) or 0)
    monkeypatch.setattr(bench_knn, "main", lambda argv: calls.append(("knn", argv)) or 0)
    assert bench._all(["--device", "cpu", "--repeat", "3", "--no-targets"]) == 0
    assert calls == [("bench", ["ops", "--device", "cpu", "--repeat", "3", "--no-targets"]),
                     ("bench", ["models", "--device", "cpu", "--repeat", "3"]),
                     ("knn", ["--device", "cpu", "--repeat", "3"])]


def test_show_prints_the_tables_of_a_saved_document(tmp_path):
    doc = {"bench": "all", "parts": [
        {"bench": "ops", "device": "cuda", "copy_gbps": 2855.0, "results": [
            {"name": "max_pool2d 2x2", "shape": "256x64x64x64", "gpudl_ms": 1.25, "torch_ms": 1.5,
             "ratio": 0.83, "gbps": 640.0, "pct_of_copy": 22.4}]},
        {"bench": "knn", "device": "cuda:0", "gpudl_ms": 10.7, "sklearn_ms": 223.3, "ratio": 0.048}]}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(doc))
    text = _bench("show", str(path))
    assert "max_pool2d 2x2" in text and "0.83" in text and "640 ( 22%)" in text
    assert "gpudl bench knn:" in text and "sklearn_ms=223.3" in text
    path.write_text("[1, 2]")
    r = subprocess.run([sys.executable, "-m", "gpudl.bench", "show", str(path)], capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
    assert r.returncode == 2 and str(path) in r.stderr and "'bench'" in r.stderr


def test_gpu_kernel_times_script_runs_every_case_on_the_emulated_gpu():
    """scripts/gpu_kernel_times.py (the device-time probe of docs/gpu-report.md), SMALL=1: every
    case runs through the CUDA backend's code on the emulator and reports two numbers."""
    from gpudl.testing import emulated_device_unavailable_reason
    if emulated_device_unavailable_reason():
        import pytest
        pytest.skip(emulated_device_unavailable_reason())
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gpu_kernel_times.py"), "x"],
                       capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, PYTHONPATH=ROOT, SMALL="1"))
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)["x"]
    assert len(res) == 9 and all(isinstance(v, list) and len(v) == 2 for v in res.values()), res
