"""Long memory: the adding problem, a vanilla RNN against an LSTM of the same size and budget.

    python examples/long_memory.py [--seq-len 100] [--steps 1200] [--device auto] [--out runs/long_memory]

Each input is a sequence of T pairs (value, marker): the values are uniform
in [0, 1], the marker is 1 at two positions (one in each half) and 0
elsewhere; the target is the sum of the two marked values (Hochreiter &
Schmidhuber 1997, Le et al. 2015).  Always answering 1 gives a mean squared
error of 1/6 ~ 0.167: that is the baseline.  To do better a model must carry
a value across ~T/2 steps.  Both models see the same batches, take the same
number of Adam steps with the same learning rate and clipping; the LSTM
solves the task, the plain tanh RNN's gradients vanish over the distance
and it stays near the baseline.  Learning curves are printed, written to
OUT/curves.csv and, when matplotlib is installed, plotted to OUT/curves.png.
"""
import argparse
import csv
import os
import time

import numpy as np

import gpudl
import gpudl.nn as nn
import gpudl.optim as optim

BASELINE = 1.0 / 6.0        # E[(a + b - 1)^2] for a, b ~ U(0, 1)


def adding_batch(rng, n, T):
    """Inputs (T, n, 2) float32 and targets (n, 1)."""
    values = rng.random((T, n)).astype(np.float32)
    markers = np.zeros((T, n), np.float32)
    first = rng.integers(0, T // 2, n)
    second = rng.integers(T // 2, T, n)
    cols = np.arange(n)
    markers[first, cols] = 1.0
    markers[second, cols] = 1.0
    target = values[first, cols] + values[second, cols]
    return np.stack([values, markers], axis=2), target[:, None]


class Regressor(nn.Module):
    """A recurrent layer, then a Linear on its last hidden state."""

    def __init__(self, rnn, hidden):
        super().__init__()
        self.rnn, self.head = rnn, nn.Linear(hidden, 1)

    def forward(self, x):
        _, h = self.rnn(x)
        h = h[0] if isinstance(h, tuple) else h      # LSTM: (h_n, c_n)
        return self.head(h[-1])


def mse(model, x, y):
    d = model(x) - y
    return (d * d).mean()


def plot(curves, path, T):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in curves]
    for name in ("RNN", "LSTM"):
        ax.plot(steps, [r[name] for r in curves], label=name)
    ax.axhline(BASELINE, color="grey", linestyle="--", label="baseline (always 1)")
    ax.set(xlabel="training step", ylabel="validation MSE", yscale="log",
           title=f"adding problem, T = {T}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq-len", type=int, default=100, help="T, the length of each sequence")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--steps", type=int, default=1200, help="training steps for each model")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-2)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--forget-bias", type=float, default=1.0,
                   help="initial LSTM forget-gate bias (bias_ih + bias_hh); PyTorch's default init gives ~0")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/long_memory")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.seq_len < 4:
        p.error("--seq-len must be at least 4")

    gpudl.manual_seed(args.seed)
    dev = gpudl.device(args.device)
    rng = np.random.default_rng(args.seed)
    models = {"RNN": Regressor(nn.RNN(2, args.hidden), args.hidden).to(dev),
              "LSTM": Regressor(nn.LSTM(2, args.hidden), args.hidden).to(dev)}
    with gpudl.no_grad():          # forget gates start open: f = sigmoid(bias) ~ 0.73 for 1.0
        H, lstm = args.hidden, models["LSTM"].rnn
        lstm.bias_ih_l0[H:2 * H] = args.forget_bias / 2
        lstm.bias_hh_l0[H:2 * H] = args.forget_bias / 2
    opts = {k: optim.Adam(m.parameters(), lr=args.lr) for k, m in models.items()}
    vx, vy = (gpudl.tensor(a, device=dev) for a in adding_batch(rng, 1000, args.seq_len))
    for k, m in models.items():
        print(f"{k}: {sum(q.numel() for q in m.parameters()):,} parameters")
    print(f"adding problem, T = {args.seq_len}; baseline MSE {BASELINE:.3f}; "
          f"{args.steps} Adam steps of batch {args.batch_size} each, on {dev}")
    print(f"{'step':>6} {'RNN mse':>10} {'LSTM mse':>10}")
    curves, times = [], dict.fromkeys(models, 0.0)
    for step in range(args.steps + 1):
        if step % args.eval_every == 0 or step == args.steps:
            with gpudl.no_grad():
                row = {"step": step, **{k: mse(m, vx, vy).item() for k, m in models.items()}}
            curves.append(row)
            print(f"{step:6d} {row['RNN']:10.4f} {row['LSTM']:10.4f}", flush=True)
        if step == args.steps:
            break
        x, y = (gpudl.tensor(a, device=dev) for a in adding_batch(rng, args.batch_size, args.seq_len))
        for k, m in models.items():
            t0 = time.perf_counter()
            loss = mse(m, x, y)
            opts[k].zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(m.parameters(), args.clip)
            opts[k].step()
            times[k] += time.perf_counter() - t0

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "curves.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["step", "RNN", "LSTM"])
        w.writeheader()
        w.writerows(curves)
    png = os.path.join(args.out, "curves.png")
    print(f"curves: {os.path.join(args.out, 'curves.csv')}"
          + (f" and {png}" if plot(curves, png, args.seq_len) else " (install matplotlib for a plot)"))
    final = curves[-1]
    for k in models:
        verdict = "solved" if final[k] < 0.1 * BASELINE else (
            "near the baseline" if final[k] > 0.5 * BASELINE else "partly learned")
        print(f"{k}: final validation MSE {final[k]:.4f} ({final[k] / BASELINE:.1%} of the baseline): "
              f"{verdict}; training time {times[k]:.0f} s")


if __name__ == "__main__":
    main()
