"""Train LeNet-5 on MNIST, written out in full (the same job `make demo` runs through the CLI).

    python examples/mnist_lenet.py [--epochs 4] [--device auto] [--out runs/mnist_lenet]
"""
import argparse

import gpudl
from gpudl import data, models, optim
from gpudl.optim.lr_scheduler import OneCycleLR
from gpudl.train import Trainer


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/mnist_lenet")
    p.add_argument("--resume", action="store_true")
    args = p.parse_args()

    gpudl.manual_seed(0)
    dev = gpudl.device(args.device)
    norm = data.Normalize(0.1307, 0.3081)
    train = data.DataLoader(data.mnist("train"), args.batch_size, shuffle=True, seed=0, device=dev, transform=norm)
    test = data.DataLoader(data.mnist("test"), 1000, device=dev, transform=norm)
    model = models.lenet5().to(dev)
    print(model)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    sched = OneCycleLR(opt, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=len(train))
    trainer = Trainer(model, opt, scheduler=sched, scheduler_step="batch", out_dir=args.out)
    history = trainer.fit(train, args.epochs, val_loader=test, resume=args.resume)
    print(f"test accuracy {history[-1]['val_acc']:.2%}; checkpoint {trainer.checkpoint_path}")


if __name__ == "__main__":
    main()
