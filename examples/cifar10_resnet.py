"""Train ResNet-20 (He et al. 2015) on CIFAR-10 with the paper's recipe (a cosine decay in
place of its step schedule), on a GPU or the CPU.

    python examples/cifar10_resnet.py                       # the real CIFAR-10 (its folder, else a download)
    python examples/cifar10_resnet.py --synthetic           # a small fake CIFAR-format set: runs anywhere
    python examples/cifar10_resnet.py --epochs 164 --train-size 0 --test-size 0 --batch-size 128 --device cuda

The recipe: SGD with momentum 0.9, weight decay 1e-4, learning rate 0.1 with
a cosine decay, batches of 128, RandomCrop(32, padding=4) and random
horizontal flips on the device, per-channel normalisation.  The defaults
are small (2 epochs on 1,024 images in batches of 64, so that BatchNorm's
running statistics settle in so few steps) and finish in well under a
minute on two CPU cores; the full run (the last command: 164 epochs on all
50,000 images) reaches about 91-92% test accuracy.  CIFAR-10 is read from ``--data-root``,
``$GPUDL_DATA`` or ``~/.cache/gpudl`` (``cifar10/cifar-10-batches-py/``).
"""
import argparse
import os
import sys
import time

import numpy as np

import gpudl
from gpudl import data, models, optim
from gpudl.optim import lr_scheduler
from gpudl.train import Trainer


def synthetic_cifar(n, seed=0):
    """``n`` uint8 (3, 32, 32) images of 10 classes and their labels: each class a smooth colour
    pattern of its own, randomly shifted, flipped and noisy -- learnable, but not at a glance."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (10, 3, 4, 4)).astype(np.float32)
    patterns = coarse.repeat(8, axis=2).repeat(8, axis=3)            # 10 x 3 x 32 x 32, 8x8 blocks
    labels = rng.integers(0, 10, n)
    x = patterns[labels]
    shifts = rng.integers(-4, 5, (n, 2))
    for i, (dy, dx) in enumerate(shifts):                              # a one-off generator: a loop is fine
        x[i] = np.roll(x[i], (dy, dx), axis=(1, 2))
    flip = rng.random(n) < 0.5
    x[flip] = x[flip][..., ::-1]
    x += rng.normal(0, 40, x.shape)
    return np.clip(x, 0, 255).astype(np.uint8), labels


def load(args):
    if args.synthetic:
        root = os.path.join(args.out, "synthetic-data")
        n_train, n_test = args.train_size or 1024, args.test_size or 512
        x, y = synthetic_cifar(n_train + n_test, seed=args.seed)
        folder = data.write_cifar10(root, (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:]))
        print(f"wrote a synthetic CIFAR-format set ({n_train} train / {n_test} test) to {folder}")
    else:
        root = args.data_root
    try:
        train, test = data.cifar10("train", root=root), data.cifar10("test", root=root)
    except (FileNotFoundError, data.DownloadError, data.DataFileError) as e:
        sys.exit(f"{e}\n\nNo CIFAR-10 here: run with --synthetic to try the example on generated data.")
    if args.train_size and len(train) > args.train_size:
        train = data.Subset(train, np.arange(args.train_size))
    if args.test_size and len(test) > args.test_size:
        test = data.Subset(test, np.arange(args.test_size))
    return train, test


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 2)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--synthetic", action="store_true", help="generate a small fake CIFAR-10 (python version) first")
    p.add_argument("--data-root", default=None, help="folder holding cifar10/cifar-10-batches-py (default $GPUDL_DATA)")
    cifar_models = [n for n in models.names() if models.input_shape(n) == (3, 32, 32)]
    p.add_argument("--model", default="resnet20", choices=cifar_models)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-size", type=int, default=1024, help="first N training images (0: all)")
    p.add_argument("--test-size", type=int, default=512, help="first N test images (0: all)")
    p.add_argument("--batch-size", type=int, default=64, help="64 for the short demo; the paper's is 128")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--out", default=os.path.join("runs", "cifar10_resnet"), help="run folder (checkpoints, history)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    gpudl.manual_seed(args.seed)
    dev = gpudl.device(args.device)
    train, test = load(args)
    train_tf, test_tf = data.cifar10_transforms(augment=not args.no_augment)
    train_loader = data.DataLoader(train, batch_size=args.batch_size, shuffle=True, seed=args.seed,
                                   device=dev, transform=train_tf)
    test_loader = data.DataLoader(test, batch_size=500, device=dev, transform=test_tf)

    model = models.create(args.model, num_classes=10).to(dev)
    opt = optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    sched = lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * len(train_loader))
    print(f"{args.model}: {sum(q.numel() for q in model.parameters()):,} parameters, on {dev}; "
          f"{len(train):,} train / {len(test):,} test images, {args.epochs} epochs of {len(train_loader)} steps")
    trainer = Trainer(model, opt, scheduler=sched, scheduler_step="batch", out_dir=args.out, progress=False)
    t0 = time.perf_counter()
    history = trainer.fit(train_loader, args.epochs, val_loader=test_loader)
    print(f"test accuracy {history[-1]['val_acc']:.2%} after {time.perf_counter() - t0:.0f} s; "
          f"checkpoint {trainer.checkpoint_path}")


if __name__ == "__main__":
    main()
