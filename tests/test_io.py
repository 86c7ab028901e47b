"""gpudl.save / gpudl.load: nested containers, atomic writes, no pickle."""
import os

import numpy as np
import pytest

import gpudl


def test_round_trip_of_nested_containers(tmp_path, device):
    obj = {
        "model": {"w": gpudl.randn(2, 3, device=device), "b": gpudl.zeros(3, dtype="float64", device=device)},
        "optimizer": {"state": {0: {"step": 3, "exp_avg": gpudl.ones(2, device=device)}},
                      "param_groups": [{"lr": 0.1, "params": [0, 1], "betas": (0.9, 0.999)}]},
        "epoch": 4, "note": "x", "none": None, "big": 2**100, "arr": np.arange(5, dtype=np.int32),
        "__dunder__": 1.5,
    }
    path = tmp_path / "ckpt.npz"
    gpudl.save(obj, path)
    back = gpudl.load(path, map_location=device)
    assert back["model"]["w"].device == device
    np.testing.assert_array_equal(back["model"]["w"].numpy(), obj["model"]["w"].numpy())
    assert back["model"]["b"].dtype == np.float64
    assert back["optimizer"]["state"][0]["step"] == 3
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert back["epoch"] == 4 and back["note"] == "x" and back["none"] is None and back["big"] == 2**100
    assert back["arr"].dtype == np.int32 and back["__dunder__"] == 1.5
    assert gpudl.load(path)["model"]["w"].device.type == "cpu"


def test_file_is_plain_npz_without_pickles(tmp_path):
    path = tmp_path / "a.npz"
    gpudl.save({"w": gpudl.ones(2)}, path)
    with np.load(path, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_atomic_write_keeps_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    gpudl.save({"v": gpudl.ones(3)}, path)

    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(KeyboardInterrupt):
        gpudl.save({"v": gpudl.zeros(3)}, path)
    monkeypatch.undo()
    assert gpudl.load(path)["v"].tolist() == [1, 1, 1]
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp")] == []


def test_saved_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        gpudl.save({"v": gpudl.ones(1)}, tmp_path / "c.npz")
    finally:
        os.umask(old)
    assert (tmp_path / "c.npz").stat().st_mode & 0o777 == 0o644      # as open() or torch.save give


def test_bad_files_get_clear_errors(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="junk.npz"):
        gpudl.load(junk)
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(2))
    with pytest.raises(ValueError, match="not one written by gpudl.save"):
        gpudl.load(other)
    with pytest.raises(TypeError, match="object"):
        gpudl.save({"x": object()}, tmp_path / "x.npz")


def test_object_arrays_are_refused(tmp_path):
    with pytest.raises(TypeError, match="Python objects"):
        gpudl.save({"a": np.array([1, "x"], dtype=object)}, tmp_path / "o.npz")


def test_numpy_scalars_and_number_keys_round_trip(tmp_path):
    d = {"f": np.float32(0.1), "i": np.int32(3), "b": np.bool_(True), "t": np.datetime64("2026-01-01"),
         np.int64(7): 1.5, "plain": 2.5}
    gpudl.save(d, tmp_path / "s.npz")
    r = gpudl.load(tmp_path / "s.npz")
    for k in ("f", "i", "b", "t"):
        assert type(r[k]) is type(d[k]) and r[k] == d[k]
    assert r[7] == 1.5 and type(r["plain"]) is float


def test_atomic_write_syncs_the_file_and_then_its_folder(tmp_path, monkeypatch):
    """The data is on disk before the rename, and the rename before save returns."""
    import stat
    from gpudl import io as gio
    synced = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    def replace(a, b):
        synced.append("rename")
        real_replace(a, b)

    monkeypatch.setattr(gio.os, "fsync", fsync)
    monkeypatch.setattr(gio.os, "replace", replace)
    gpudl.save({"v": gpudl.ones(2)}, tmp_path / "sub" / "d.npz")
    assert synced == ["file", "rename", "folder"]
    assert gpudl.load(tmp_path / "sub" / "d.npz")["v"].tolist() == [1, 1]
