"""Sequential MNIST: an LSTM reads each digit row by row (28 steps of 28 pixels) and classifies it.

    python examples/sequential_mnist_lstm.py [--epochs 6] [--device auto] [--out runs/seqmnist_lstm]

The model is LSTM(28 -> 128) + Linear(128 -> 10) on the last hidden state
(``gpudl.models.create("lstm")``, the same one ``gpudl train --model lstm
--data seqmnist`` trains), fitted with Adam on a one-cycle schedule, the
gradient norm clipped at 1.  The default run reaches >= 98% test accuracy.
"""
import argparse
import time

import gpudl
from gpudl import data, models, optim
from gpudl.optim.lr_scheduler import OneCycleLR
from gpudl.train import Trainer


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=4e-3, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--clip", type=float, default=1.0, help="max gradient norm (0: no clipping)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N train and test images")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/seqmnist_lstm")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    gpudl.manual_seed(args.seed)
    dev = gpudl.device(args.device)
    train_ds, test_ds = data.mnist("train"), data.mnist("test")
    if args.limit:
        train_ds = data.Subset(train_ds, range(min(args.limit, len(train_ds))))
        test_ds = data.Subset(test_ds, range(min(args.limit, len(test_ds))))
    norm = data.Normalize(0.1307, 0.3081)
    train = data.DataLoader(train_ds, args.batch_size, shuffle=True, seed=args.seed, device=dev, transform=norm)
    test = data.DataLoader(test_ds, 1000, device=dev, transform=norm)
    model = models.create("lstm", hidden_size=args.hidden).to(dev)
    print(model)
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters; each image is a sequence of "
          f"28 rows of 28 pixels")
    opt = optim.Adam(model.parameters(), lr=args.lr)
    sched = OneCycleLR(opt, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=len(train))
    trainer = Trainer(model, opt, scheduler=sched, scheduler_step="batch", out_dir=args.out,
                      clip_grad_norm=args.clip or None)
    t0 = time.perf_counter()
    history = trainer.fit(train, args.epochs, val_loader=test, resume=args.resume)
    print(f"test accuracy {history[-1]['val_acc']:.2%} after {history[-1]['epoch']} epochs on {dev} "
          f"({time.perf_counter() - t0:.0f} s); run folder {args.out}")


if __name__ == "__main__":
    main()
