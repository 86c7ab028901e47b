"""The Trainer and the gpudl command, on tiny MNIST-format files the test writes."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import gpudl
from gpudl import data, models, nn, optim
from gpudl.data import write_idx
from gpudl.train import Trainer, confusion_matrix, accuracy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch):
    """Learnable fake MNIST: the label is drawn as a bright square at a label-dependent place."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    for split, n, prefix in (("train", 256, "train"), ("test", 64, "t10k")):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            r, col = 2 + (c // 5) * 12, 2 + (c % 5) * 5
            images[i, r:r + 8, col:col + 4] = 250
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    monkeypatch.setenv("GPUDL_DATA", str(tmp_path / "data"))
    return tmp_path


def _loaders(device, seed=0):
    tr = data.mnist("train", download=False)
    te = data.mnist("test", download=False)
    return (data.DataLoader(tr, 32, shuffle=True, seed=seed, device=device),
            data.DataLoader(te, 64, device=device))


def _trainer(device, out, **kw):
    gpudl.manual_seed(0)
    model = models.create("lenet5").to(device)
    opt = optim.Adam(model.parameters(), lr=3e-3)
    sched = optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    return Trainer(model, opt, scheduler=sched, out_dir=out, progress=False, log=None, **kw)


def test_fit_learns_and_writes_history_and_checkpoint(tiny_mnist, device):
    train, test = _loaders(device)
    out = tiny_mnist / "run"
    tr = _trainer(device, str(out))
    hist = tr.fit(train, 3, val_loader=test)
    assert [r["epoch"] for r in hist] == [1, 2, 3]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert hist[-1]["val_acc"] > 0.5
    assert [r["lr"] for r in hist] == pytest.approx([3e-3, 1.5e-3, 7.5e-4])
    for f in ("checkpoint.npz", "best.npz", "history.csv", "history.json"):
        assert (out / f).exists(), f
    saved = json.loads((out / "history.json").read_text())
    assert saved[-1]["val_acc"] == pytest.approx(hist[-1]["val_acc"])
    assert abs(accuracy(tr.model, test) - hist[-1]["val_acc"]) < 1e-9
    cm = confusion_matrix(tr.model, test, 10)
    assert cm.sum() == 64 and np.trace(cm) == round(hist[-1]["val_acc"] * 64)


def test_resume_continues_exactly(tiny_mnist):
    dev = gpudl.device("cpu")
    train, test = _loaders(dev)
    full = _trainer(dev, str(tiny_mnist / "full"))
    full.fit(train, 3, val_loader=test)
    part_dir = str(tiny_mnist / "part")
    train2, test2 = _loaders(dev)
    _trainer(dev, part_dir).fit(train2, 2, val_loader=test2)
    train3, test3 = _loaders(dev, seed=123)          # the checkpoint restores the loader's order
    resumed = _trainer(dev, part_dir)
    hist = resumed.fit(train3, 3, val_loader=test3, resume=True)
    assert len(hist) == 3
    for k, v in full.model.state_dict().items():
        np.testing.assert_allclose(resumed.model.state_dict()[k].numpy(), v.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
    assert hist[-1]["val_loss"] == pytest.approx(full.history[-1]["val_loss"], rel=1e-5)


def test_interrupt_leaves_last_complete_checkpoint(tiny_mnist):
    dev = gpudl.device("cpu")
    train, test = _loaders(dev)
    out = tiny_mnist / "run"
    tr = _trainer(dev, str(out))
    tr.fit(train, 1)
    before = (out / "checkpoint.npz").read_bytes()
    calls = {"n": 0}
    original = tr.optimizer.step

    def step_then_interrupt(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*a, **k)
    tr.optimizer.step = step_then_interrupt
    with pytest.raises(KeyboardInterrupt):
        tr.fit(train, 2)
    assert (out / "checkpoint.npz").read_bytes() == before
    assert gpudl.load(out / "checkpoint.npz")["epoch"] == 1


def test_early_stopping(tiny_mnist):
    dev = gpudl.device("cpu")
    train, test = _loaders(dev)
    tr = _trainer(dev, None, early_stopping=1)
    tr.optimizer.param_groups[0]["lr"] = 0.0        # nothing improves after the first epoch
    tr.scheduler = None
    hist = tr.fit(train, 10, val_loader=test)
    assert len(hist) == 2


def test_early_stopping_needs_a_patience_of_one_epoch_or_more():
    m = models.create("mlp")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="early_stopping to be a number of epochs >= 1"):
            Trainer(m, optim.SGD(m.parameters(), lr=0.1), early_stopping=bad, progress=False, log=None)


def test_confusion_matrix_counts_and_refuses_classes_out_of_range():
    cm = confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3)
    np.testing.assert_array_equal(cm, [[1, 0, 0], [0, 1, 0], [0, 1, 1]])
    with pytest.raises(ValueError, match=r"a prediction of class 2, expected classes 0 .. 1"):
        confusion_matrix(np.array([2, 0]), np.array([0, 1]), num_classes=2)
    with pytest.raises(ValueError, match=r"a target of class -100"):
        confusion_matrix(np.array([0, 1]), np.array([-100, 1]), num_classes=2)
    with pytest.raises(ValueError, match="2 predictions for 3 targets"):
        confusion_matrix(np.array([0, 1]), np.array([0, 1, 1]))


def test_cli_step_schedule_drops_once_per_milestone_and_never_before_epoch_one():
    from gpudl.cli import _scheduler
    for epochs, want in ((1, [1]), (2, [1]), (3, [1, 2]), (8, [4, 6])):
        m = models.create("mlp")
        sched, when = _scheduler("step", optim.SGD(m.parameters(), lr=0.1), 0.1, epochs, 10)
        assert when == "epoch" and sorted(sched.milestones) == want


def test_checkpoint_of_another_model_names_the_keys(tiny_mnist):
    dev = gpudl.device("cpu")
    train, _ = _loaders(dev)
    tr = _trainer(dev, str(tiny_mnist / "run"))
    tr.fit(train, 1)
    other = Trainer(models.create("mlp"), optim.Adam(models.create("mlp").parameters()), progress=False, log=None)
    with pytest.raises(RuntimeError, match="features.0.weight|net.1.weight"):
        other.load_checkpoint(tr.checkpoint_path)


def _cli(args, env_extra, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT, **env_extra)
    return subprocess.run([sys.executable, "-m", "gpudl", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_cli_train_and_resume(tiny_mnist):
    env = {"GPUDL_DATA": str(tiny_mnist / "data"), "GPUDL_DEVICE": "cpu"}
    out = tiny_mnist / "cli"
    r = _cli(["train", "--model", "lenet5", "--data", "mnist", "--epochs", "1", "--batch-size", "32",
              "--schedule", "none", "--out", str(out), "--no-progress"], env, tiny_mnist)
    assert r.returncode == 0, r.stderr
    assert "test accuracy" in r.stdout and str(out / "checkpoint.npz") in r.stdout
    r = _cli(["train", "--model", "lenet5", "--epochs", "2", "--batch-size", "32", "--out", str(out),
              "--schedule", "none", "--resume", "--no-progress"], env, tiny_mnist)
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stdout and "after 2 epochs" in r.stdout
    assert len(json.loads((out / "history.json").read_text())) == 2
    # the default one-cycle schedule cannot be stretched: a clear error, not a crash mid-run
    out2 = tiny_mnist / "cli2"
    r = _cli(["train", "--model", "lenet5", "--epochs", "1", "--batch-size", "32", "--out", str(out2),
              "--no-progress"], env, tiny_mnist)
    assert r.returncode == 0, r.stderr
    r = _cli(["train", "--model", "lenet5", "--epochs", "2", "--batch-size", "32", "--out", str(out2),
              "--resume", "--no-progress"], env, tiny_mnist)
    assert r.returncode != 0 and "cannot be extended" in r.stderr


def test_cli_errors_and_help(tiny_mnist):
    r = _cli(["train", "--model", "nonesuch"], {}, tiny_mnist)
    assert r.returncode != 0 and "lenet5" in r.stderr and "resnet20" in r.stderr
    r = _cli(["train", "--data", "nonesuch"], {}, tiny_mnist)
    assert r.returncode != 0 and "mnist" in r.stderr and "cifar10" in r.stderr
    r = _cli(["train", "--help"], {}, tiny_mnist)
    for name in models.names() + ["mnist", "cifar10", "seqmnist"]:
        assert name in r.stdout
    for flag in ("--limit", "--epochs", "--early-stopping"):
        r = _cli(["train", flag, "0"], {}, tiny_mnist)
        assert r.returncode == 2 and "expected a positive integer, got 0" in r.stderr
    r = _cli(["info"], {"GPUDL_DEVICE": "cpu"}, tiny_mnist)
    assert r.returncode == 0 and "NumPy" in r.stdout and "conv2d.cu" in r.stdout


def test_trainer_clips_gradients_before_each_step(tiny_mnist):
    dev = gpudl.device("cpu")
    train, _ = _loaders(dev)
    gpudl.manual_seed(0)
    model = models.create("lenet5")
    before = [p.numpy().copy() for p in model.parameters()]
    norms = []
    opt = optim.SGD(model.parameters(), lr=1.0)
    step = opt.step

    def recording_step():
        norms.append(np.sqrt(sum((p.grad.numpy().astype(np.float64) ** 2).sum() for p in model.parameters())))
        step()
    opt.step = recording_step
    Trainer(model, opt, progress=False, log=None, clip_grad_norm=1e-3).fit(train, 1)
    assert len(norms) == len(train) and max(norms) <= 1e-3 * (1 + 1e-4)
    moved = np.sqrt(sum(((p.numpy() - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert 0 < moved <= len(train) * 1e-3 * (1 + 1e-4)
    with pytest.raises(ValueError, match="clip_grad_norm > 0"):
        Trainer(model, opt, clip_grad_norm=0)


def test_regression_targets_train_without_an_accuracy(tmp_path):
    """MSE on float targets: the Trainer trains and reports the loss; the
    accuracy (meaningless there) is NaN, left out of the log and null in
    history.json, which stays strict JSON."""
    r = np.random.default_rng(0)
    x = r.standard_normal((32, 4)).astype(np.float32)
    y = (x @ r.standard_normal((4, 3))).astype(np.float32)
    loader = data.DataLoader(data.TensorDataset(x, y), 8)
    gpudl.manual_seed(0)
    model = nn.Linear(4, 3)
    lines = []
    tr = Trainer(model, optim.SGD(model.parameters(), lr=0.1), loss_fn=nn.functional.mse_loss,
                 out_dir=str(tmp_path), progress=False, log=lines.append)
    hist = tr.fit(loader, 3, val_loader=loader)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert np.isnan(hist[-1]["train_acc"]) and np.isnan(hist[-1]["val_acc"])
    assert np.isnan(tr.evaluate(loader)["accuracy"])
    assert lines and not any("acc" in s for s in lines) and all("val loss" in s for s in lines[:3])
    saved = json.loads((tmp_path / "history.json").read_text(),
                       parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert saved[-1]["train_acc"] is None and saved[-1]["train_loss"] == pytest.approx(hist[-1]["train_loss"])


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_a_diverged_loss_still_writes_the_history(tmp_path):
    """inf (and NaN) losses go into history.json as null, not a crash."""
    x = np.zeros((4, 2), np.float32)
    y = np.full((4, 2), 1e30, np.float32)
    model = nn.Linear(2, 2)
    tr = Trainer(model, optim.SGD(model.parameters(), lr=0.1), loss_fn=nn.functional.mse_loss,
                 out_dir=str(tmp_path), progress=False, log=None)
    hist = tr.fit(data.DataLoader(data.TensorDataset(x, y), 4), 1)
    assert np.isinf(hist[0]["train_loss"])
    saved = json.loads((tmp_path / "history.json").read_text(),
                       parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert saved[0]["train_loss"] is None and saved[0]["epoch"] == 1


def test_accuracy_of_per_position_targets_counts_positions():
    """Logits (N, C, L) against class indices (N, L): the share of the N * L
    positions that are right (it was divided by N)."""
    logits = np.zeros((2, 3, 4), np.float32)
    target = np.array([[0, 1, 2, 0], [1, 1, 1, 1]])
    logits[0, target[0], np.arange(4)] = 1      # image 0: all four right
    logits[1, 2, :] = 1                          # image 1: all wrong
    model = nn.Identity()
    loader = [(gpudl.tensor(logits), gpudl.tensor(target))]
    tr = Trainer(model, optim.SGD([gpudl.zeros(1, requires_grad=True)], lr=0.1),
                 progress=False, log=None)
    assert tr.evaluate(loader)["accuracy"] == pytest.approx(0.5)


@pytest.mark.parametrize("when", ["batch", "epoch"])
def test_resume_refuses_to_run_a_cosine_schedule_past_its_end(tmp_path, when):
    """A run resumed with more epochs than its checkpoint's cosine schedule
    covers would see the learning rate climb back up: it is refused, naming
    both lengths; resuming with the original number of epochs still works."""
    r = np.random.default_rng(0)
    x, y = r.standard_normal((32, 4)).astype(np.float32), r.integers(0, 3, 32)
    loader = data.DataLoader(data.TensorDataset(x, y), 8)
    per = len(loader) if when == "batch" else 1

    def trainer(epochs):
        gpudl.manual_seed(0)
        model = nn.Linear(4, 3)
        opt = optim.SGD(model.parameters(), lr=0.1)
        sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * per)
        return Trainer(model, opt, scheduler=sched, scheduler_step=when, out_dir=str(tmp_path),
                       progress=False, log=None)

    trainer(2).fit(loader, 1)
    unit = "batches" if when == "batch" else "epochs"
    with pytest.raises(ValueError, match=rf"cosine schedule ends after {2 * per} {unit} but 4 epochs "
                                         rf"need {4 * per}; past its end the learning rate would rise"):
        trainer(4).fit(loader, 4, resume=True)
    hist = trainer(2).fit(loader, 2, resume=True)
    assert [e["lr"] for e in hist] == pytest.approx([0.1, 0.05])
