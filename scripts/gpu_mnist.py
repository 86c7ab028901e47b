"""LeNet-5 on MNIST for a few epochs on the GPU: gpudl next to PyTorch CUDA, same data, same recipe.

    GPUDL_DATA=.gpu-data python scripts/gpu_mnist.py --epochs 2 --json OUT.json

Reads MNIST from the local cache only (no network on GPU machines: run
`make gpu-data` on a machine that has the cache and carry `.gpu-data`).
Prints, per library and epoch, the wall time, images/s and test accuracy.
"""
import argparse
import json
import sys
import time

import numpy as np

import gpudl
import gpudl.nn.functional as F
from gpudl import data, models, optim


def run_gpudl(train_x, train_y, test_x, test_y, epochs, batch, lr, device):
    gpudl.manual_seed(0)
    dev = gpudl.device(device)
    norm = data.Normalize(0.1307, 0.3081)
    train = data.DataLoader(data.TensorDataset(train_x, train_y), batch, shuffle=True, seed=0, device=dev,
                            transform=data.Compose([data.ToFloat(), norm]))
    tx = norm(data.ToFloat()(gpudl.tensor(test_x, device=dev)))
    ty = gpudl.tensor(test_y, device=dev)
    model = models.lenet5().to(dev)
    opt = optim.Adam(model.parameters(), lr=lr)
    sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, epochs=epochs, steps_per_epoch=len(train))
    out = []
    for ep in range(epochs):
        model.train()
        dev.backend.synchronize()
        t0 = time.perf_counter()
        for xb, yb in train:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        dev.backend.synchronize()
        dt = time.perf_counter() - t0
        model.eval()
        with gpudl.no_grad():
            correct = sum(int((model(tx[i:i + 1000]).argmax(1) == ty[i:i + 1000]).sum().item())
                          for i in range(0, len(test_y), 1000))
        out.append({"epoch": ep + 1, "seconds": dt, "images_per_s": len(train_y) / dt,
                    "test_acc": correct / len(test_y)})
        print(f"gpudl  epoch {ep + 1}: {dt:6.2f} s  {len(train_y) / dt:9,.0f} img/s  test acc {correct / len(test_y):.4f}",
              flush=True)
    return out


def run_torch(train_x, train_y, test_x, test_y, epochs, batch, lr):
    import torch
    import torch.nn as nn
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    dev = "cuda"
    from gpudl.bench_models import _torch_models
    m = _torch_models(torch)["lenet5"]().to(dev)        # the benchmark's PyTorch LeNet-5
    X = ((torch.tensor(train_x, device=dev).float() / 255.0) - 0.1307) / 0.3081
    Y = torch.tensor(train_y, device=dev)
    TX = ((torch.tensor(test_x, device=dev).float() / 255.0) - 0.1307) / 0.3081
    TY = torch.tensor(test_y, device=dev)
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    steps = (len(Y) + batch - 1) // batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, epochs=epochs, steps_per_epoch=steps)
    gen = np.random.default_rng(0)
    out = []
    for ep in range(epochs):
        m.train()
        perm = torch.tensor(gen.permutation(len(Y)), device=dev)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(0, len(Y), batch):
            idx = perm[i:i + batch]
            loss = nn.functional.cross_entropy(m(X[idx]), Y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        m.eval()
        with torch.no_grad():
            acc = float((m(TX).argmax(1) == TY).float().mean())
        out.append({"epoch": ep + 1, "seconds": dt, "images_per_s": len(Y) / dt, "test_acc": acc})
        print(f"torch  epoch {ep + 1}: {dt:6.2f} s  {len(Y) / dt:9,.0f} img/s  test acc {acc:.4f}", flush=True)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--device", default="cuda")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    tr, te = data.mnist("train", download=False), data.mnist("test", download=False)
    arrays = (tr.images, tr.labels, te.images, te.labels)
    result = {"device": args.device, "epochs": args.epochs, "batch_size": args.batch_size}
    result["gpudl"] = run_gpudl(*arrays, args.epochs, args.batch_size, args.lr, args.device)
    try:
        import torch
        if torch.cuda.is_available():
            result["torch"] = run_torch(*arrays, args.epochs, args.batch_size, args.lr)
            result["torch_version"] = torch.__version__
    except ImportError:
        print("PyTorch is not installed: gpudl only", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
