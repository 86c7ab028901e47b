"""Train the classic 784-256-10 MLP on MNIST with the Trainer.

    python examples/mnist_mlp.py [--epochs 5] [--device auto] [--out runs/mnist_mlp]

About 98% test accuracy after 5 epochs of Adam.
"""
import argparse

import gpudl
from gpudl import data, models, optim
from gpudl.train import Trainer, confusion_matrix, predict


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/mnist_mlp")
    args = p.parse_args()

    gpudl.manual_seed(0)
    dev = gpudl.device(args.device)
    norm = data.Normalize(0.1307, 0.3081)
    train = data.DataLoader(data.mnist("train"), args.batch_size, shuffle=True, seed=0, device=dev, transform=norm)
    test = data.DataLoader(data.mnist("test"), 1000, device=dev, transform=norm)
    model = models.mlp(784, (256,), 10).to(dev)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    trainer = Trainer(model, opt, out_dir=args.out)
    trainer.fit(train, args.epochs, val_loader=test)
    pred, target = predict(model, test)
    print("confusion matrix (rows: true digit, columns: predicted):")
    print(confusion_matrix(pred, target, 10))
    print(f"test accuracy {(pred == target).mean():.2%}; history and curves in {args.out}")


if __name__ == "__main__":
    main()
