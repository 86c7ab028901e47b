"""The ``gpudl`` command: ``info``, ``train`` and ``bench``.

    gpudl train --model lenet5 --data mnist --epochs 3 --batch-size 64 --optimizer adam --out runs/lenet
    gpudl info
    gpudl bench ops
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time


# ---- datasets the command can train on ------------------------------------------------

def _mnist(root, normalize=True):
    from . import data
    train, test = data.mnist("train", root=root), data.mnist("test", root=root)
    tf = data.Normalize(0.1307, 0.3081) if normalize else None
    return train, test, (tf, tf), 10


def _cifar10(root, normalize=True, augment=True):
    from . import data
    train, test = data.cifar10("train", root=root), data.cifar10("test", root=root)
    return train, test, data.cifar10_transforms(augment=augment, normalize=normalize), 10


# a dataset entry: (loader, description); loader(root) -> (train, test, (train_transform,
# test_transform), num_classes) -- a single transform (not a pair) serves both
DATASETS = {
    "mnist": (_mnist, "MNIST digits, 1x28x28, 60,000 train / 10,000 test"),
    "seqmnist": (_mnist, "MNIST read row by row: 28 steps of 28 pixels (the model, e.g. lstm, reshapes)"),
    "cifar10": (_cifar10, "CIFAR-10, 3x32x32, 50,000 train / 10,000 test; RandomCrop(32, 4) + flip"),
}

# the paper's recipe for the CIFAR models (He et al. 2015; Simonyan & Zisserman for VGG), with
# a cosine decay in place of the papers' steps: applied to each flag the user did not pass
_CIFAR_SGD = dict(data="cifar10", optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4,
                  schedule="cosine", batch_size=128)
MODEL_DEFAULTS = {
    # >= 99% MNIST test accuracy in 4 epochs (about a minute on 2 CPU cores)
    "lenet5": dict(data="mnist", optimizer="adam", lr=3e-3, schedule="onecycle", epochs=4, batch_size=64),
    # sequential MNIST: 99% in 6 epochs
    "lstm": dict(data="seqmnist", optimizer="adam", lr=4e-3, schedule="onecycle", epochs=6, batch_size=128),
    **{m: _CIFAR_SGD for m in ("resnet18", "resnet20", "resnet32", "resnet56")},
    **{m: dict(_CIFAR_SGD, weight_decay=5e-4) for m in ("vgg11", "vgg16")},
    # no BatchNorm: a smaller step
    **{m: dict(_CIFAR_SGD, lr=0.01, weight_decay=5e-4) for m in ("alexnet_cifar", "cifar_cnn")},
}


def register_dataset(name, loader, description):
    DATASETS[name] = (loader, description)


def _epilog():
    from . import models
    lines = ["models:"] + [f"  {n:14s} {d}" for n, d in models.describe().items()]
    lines += ["datasets:"] + [f"  {n:14s} {d}" for n, (_, d) in sorted(DATASETS.items())]
    return "\n".join(lines)


# ---- info -----------------------------------------------------------------------------------

def cmd_info(args):
    import numpy
    import gpudl
    from .backend import _probe_cuda
    from .backend.kernels import kernel_dir
    print(f"gpudl {gpudl.__version__} (Python {platform.python_version()}, {platform.machine()})")
    print(f"NumPy {numpy.__version__}")
    try:
        import cupy
        print(f"CuPy {cupy.__version__}")
    except Exception as e:
        print(f"CuPy: not available ({type(e).__name__}: {e})")
    ok, reason, count = _probe_cuda()
    env = os.environ.get("GPUDL_DEVICE")
    chosen = gpudl.device("auto")
    print(f"device('auto') -> {chosen}" + (f" (GPUDL_DEVICE={env})" if env else f" ({reason})"))
    kd = kernel_dir()
    files = sorted(f for f in os.listdir(kd) if f.endswith(".cu"))
    print(f"kernel sources: {kd}: {', '.join(files)}")
    from .backend import _native
    print(f"CPU native kernels ({_native.SOURCE}): {_native.status()}")
    if ok:
        import cupy
        for i in range(count):
            props = cupy.cuda.runtime.getDeviceProperties(i)
            name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
            print(f"cuda:{i}: {name}, {props['totalGlobalMem'] / 2**30:.1f} GiB, "
                  f"compute capability {props['major']}.{props['minor']}")
        from .backend.kernels import cupy_module_loader
        load = cupy_module_loader(0)
        for f in files:
            try:
                load(f)
                print(f"  {f}: compiled")
            except Exception as e:
                print(f"  {f}: FAILED: {e}")
    else:
        print("no GPU: kernels not compiled for a device (the test suite runs them in the CUDA emulator)")
    return 0


# ---- train ------------------------------------------------------------------------------------

def _optimizer(name, params, lr, momentum, weight_decay):
    from . import optim
    if name == "sgd":
        return optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "rmsprop":
        return optim.RMSprop(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    raise ValueError(f"unknown optimizer {name!r}; expected sgd, adam, adamw or rmsprop")


def _scheduler(name, opt, lr, epochs, steps_per_epoch):
    from .optim import lr_scheduler as S
    if name == "none":
        return None, "epoch"
    if name == "onecycle":
        return S.OneCycleLR(opt, max_lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch), "batch"
    if name == "cosine":
        return S.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch), "batch"
    if name == "step":
        # x0.1 after half and after three quarters of the epochs: distinct milestones, none
        # before the first epoch (a repeated one would apply gamma twice, as in PyTorch)
        milestones = sorted({max(1, int(epochs * 0.5)), max(1, int(epochs * 0.75))})
        return S.MultiStepLR(opt, milestones=milestones, gamma=0.1), "epoch"
    raise ValueError(f"unknown schedule {name!r}; expected none, onecycle, cosine or step")


def cmd_train(args):
    import gpudl
    from . import models, data
    from .train import Trainer

    if args.data not in DATASETS:
        raise SystemExit(f"gpudl train: unknown dataset {args.data!r}; expected one of: {', '.join(sorted(DATASETS))}")
    if args.model not in models.names():
        raise SystemExit(f"gpudl train: unknown model {args.model!r}; expected one of: {', '.join(models.names())}")
    gpudl.manual_seed(args.seed)
    dev = gpudl.device(args.device)
    train_ds, test_ds, transform, num_classes = DATASETS[args.data][0](args.data_root)
    train_tf, test_tf = transform if isinstance(transform, tuple) else (transform, transform)
    if args.limit is not None:
        train_ds = data.Subset(train_ds, range(min(args.limit, len(train_ds))))
        test_ds = data.Subset(test_ds, range(min(args.limit, len(test_ds))))
    train_loader = data.DataLoader(train_ds, batch_size=args.batch_size, shuffle=True, drop_last=False,
                                   seed=args.seed, device=dev, transform=train_tf)
    test_loader = data.DataLoader(test_ds, batch_size=max(args.batch_size, 500), device=dev, transform=test_tf)
    model = models.create(args.model, num_classes=num_classes).to(dev)
    nparams = sum(p.numel() for p in model.parameters())
    opt = _optimizer(args.optimizer, model.parameters(), args.lr, args.momentum, args.weight_decay)
    sched, when = _scheduler(args.schedule, opt, args.lr, args.epochs, len(train_loader))
    out = args.out or os.path.join("runs", f"{args.model}-{args.data}")
    print(f"training {args.model} ({nparams:,} parameters) on {args.data} ({len(train_ds):,} train / "
          f"{len(test_ds):,} test) on {dev}: {args.epochs} epochs, batch {args.batch_size}, "
          f"{args.optimizer} lr {args.lr}, schedule {args.schedule}")
    trainer = Trainer(model, opt, scheduler=sched, scheduler_step=when, out_dir=out,
                      progress=not args.no_progress, early_stopping=args.early_stopping,
                      clip_grad_norm=args.clip_grad_norm)
    t0 = time.perf_counter()
    try:
        trainer.fit(train_loader, args.epochs, val_loader=test_loader, resume=args.resume)
    except ValueError as e:
        print(f"gpudl train: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if os.path.exists(trainer.checkpoint_path):
            print(f"\ninterrupted; the last complete epoch is saved in {trainer.checkpoint_path} "
                  f"(continue with --resume)", file=sys.stderr)
        else:
            print("\ninterrupted before the first epoch ended; nothing was saved", file=sys.stderr)
        return 130
    final = trainer.history[-1] if trainer.history else None
    wall = time.perf_counter() - t0
    if final:
        print(f"test accuracy {final['val_acc']:.2%} after {final['epoch']} epochs ({wall:.0f} s)")
    print(f"checkpoint: {trainer.checkpoint_path}")
    print(f"history:    {os.path.join(out, 'history.csv')} and history.json")
    png = os.path.join(out, "curves.png")
    print(f"plot:       {png}" if os.path.exists(png) else "plot:       (install matplotlib for curves.png)")
    if args.min_accuracy is not None and final and not final["val_acc"] >= args.min_accuracy:
        print(f"test accuracy {final['val_acc']:.2%} is below the required {args.min_accuracy:.2%}", file=sys.stderr)
        return 1
    return 0


def cmd_bench(args, rest):
    from . import bench
    return bench.main(rest)


def _positive_int(text):
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {n}")
    return n


def build_parser():
    p = argparse.ArgumentParser(prog="gpudl", description="gpudl: train and inspect models on a GPU or the CPU")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, devices and kernels")
    t = sub.add_parser("train", help="train a model on a dataset", epilog=_epilog(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--model", default="lenet5", help="model name (listed below)")
    t.add_argument("--data", default="mnist", help="dataset name (listed below)")
    t.add_argument("--epochs", type=_positive_int, default=3)
    t.add_argument("--batch-size", type=_positive_int, default=64)
    t.add_argument("--lr", type=float, default=None, help="learning rate (default: per model, else per optimizer)")
    t.add_argument("--optimizer", default="adam", choices=["sgd", "adam", "adamw", "rmsprop"])
    t.add_argument("--momentum", type=float, default=0.9)
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--schedule", default="none", choices=["none", "onecycle", "cosine", "step"])
    t.add_argument("--device", default="auto")
    t.add_argument("--out", default=None, help="run folder (default runs/MODEL-DATA)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--early-stopping", type=_positive_int, default=None, metavar="EPOCHS")
    t.add_argument("--clip-grad-norm", type=float, default=None, metavar="MAX_NORM",
                   help="clip the gradients' joint norm before each step")
    t.add_argument("--data-root", default=None)
    t.add_argument("--limit", type=_positive_int, default=None,
                   help="use only the first N train and test examples")
    t.add_argument("--min-accuracy", type=float, default=None, help="exit 1 if the final test accuracy is lower")
    t.add_argument("--no-progress", action="store_true")
    sub.add_parser("bench", help="benchmarks (see gpudl bench --help)", add_help=False)
    return p


def _apply_model_defaults(args, argv):
    """Set each flag of MODEL_DEFAULTS[args.model] that ``argv`` does not give."""
    defaults = MODEL_DEFAULTS.get(args.model)
    if not defaults:
        return
    probe = build_parser()   # the same parser with every default suppressed: only given flags remain
    sub = next(a for a in probe._actions if isinstance(a, argparse._SubParsersAction))
    for action in sub.choices["train"]._actions:
        action.default = argparse.SUPPRESS
    given = vars(probe.parse_args(argv))
    if given.get("optimizer", defaults["optimizer"]) != defaults["optimizer"]:
        defaults = {k: v for k, v in defaults.items() if k != "lr"}   # another optimizer: its own lr
    for key, value in defaults.items():
        if key not in given:
            setattr(args, key, value)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        return cmd_bench(None, argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "info":
        return cmd_info(args)
    if args.command == "train":
        _apply_model_defaults(args, argv)
        if args.lr is None:
            args.lr = {"sgd": 0.1, "adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3}[args.optimizer]
        return cmd_train(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
