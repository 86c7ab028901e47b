"""Scores, hinge loss and softmax loss of one 4-pixel image, step by step, then one gradient step.

    python examples/linear_scores.py [--loss svm|softmax] [--lr 1e-4] [--reg 0]
                                     [--device auto|cpu|cuda] [--out runs/linear_scores]

CS231n's worked example: an "image" of four pixels, x = (56, 231, 24, 2),
is a cat (class 0 of cat, dog, ship); a linear classifier with a 3 x 4 W and
a bias b scores it s = W x + b.  Each number is worked out by hand (NumPy)
and checked against gpudl's LinearClassifier; then gpudl's autograd gives
the gradient of the chosen loss, one SGD step is taken, and the new scores
and loss are printed.  The transcript is saved to ``<out>/linear_scores.txt``.
"""
import argparse
import os

import numpy as np

import gpudl
from gpudl.classic import LinearClassifier

CLASSES = ("cat", "dog", "ship")
X = np.array([[56.0, 231.0, 24.0, 2.0]])
Y = 0
W = np.array([[0.2, -0.5, 0.1, 2.0],
              [1.5, 1.3, 2.1, 0.0],
              [0.0, 0.25, 0.2, -0.3]])
B = np.array([1.1, 3.2, -1.2])


def fmt(v):
    return "[" + ", ".join(f"{a:9.3f}" for a in np.ravel(v)) + "]"


def hand_losses(s, y, margin, reg, W, say):
    """The hinge and softmax losses of scores s, worked out and printed term by term."""
    say(f"multiclass SVM loss, margin {margin}: sum over j != {CLASSES[y]} of max(0, s_j - s_{CLASSES[y]} + {margin})")
    hinge = 0.0
    for j, name in enumerate(CLASSES):
        if j != y:
            term = max(0.0, s[j] - s[y] + margin)
            hinge += term
            say(f"  {name:>4}: max(0, {s[j]:.2f} - ({s[y]:.2f}) + {margin}) = {term:.2f}")
    z = s - s.max()
    e = np.exp(z)
    p = e / e.sum()
    say("softmax loss: -log(exp(s_cat) / sum_j exp(s_j)), computed from s - max(s) so exp cannot overflow")
    say(f"  s - max(s)      = {fmt(z)}")
    say(f"  exp(s - max(s)) = {fmt(e)}")
    say(f"  probabilities   = {fmt(p)}")
    softmax = -(z[y] - np.log(e.sum()))
    say(f"  -log p_{CLASSES[y]} = log(sum of exp) - (s_{CLASSES[y]} - max(s)) "
        f"= {np.log(e.sum()):.3f} - ({z[y]:.3f}) = {softmax:.3f}")
    penalty = reg * float((W ** 2).sum())
    return {"svm": hinge + penalty, "softmax": softmax + penalty}, penalty


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--loss", choices=("svm", "softmax"), default="svm", help="the loss of the gradient step")
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate of the step")
    p.add_argument("--reg", type=float, default=0.0, help="weight of reg * sum(W**2)")
    p.add_argument("--margin", type=float, default=1.0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=os.path.join("runs", "linear_scores"))
    args = p.parse_args()

    lines = []

    def say(text=""):
        print(text)
        lines.append(text)

    dev = gpudl.device(args.device)
    models = {loss: LinearClassifier(loss=loss, reg=args.reg, margin=args.margin, device=dev).set_weights(W, B)
              for loss in ("svm", "softmax")}
    say(f"image x = {X[0].tolist()}, label {Y} ({CLASSES[Y]}); device {dev}")
    say("scores s = W x + b:")
    s = X[0] @ W.T + B
    for j, name in enumerate(CLASSES):
        terms = " + ".join(f"{w:g}*{v:g}" for w, v in zip(W[j], X[0]))
        say(f"  {name:>4}: {terms} + {B[j]:g} = {s[j]:.2f}")
    got = models["svm"].decision_function(X)[0]
    say(f"  gpudl: {fmt(got)}   (the CS231n slide prints 61.95 for ship; the sum is 60.75)")
    assert np.allclose(got, s)

    hand, penalty = hand_losses(s, Y, args.margin, args.reg, W, say)
    say(f"regularisation: reg * sum(W**2) = {args.reg:g} * {(W ** 2).sum():.3f} = {penalty:.3f}")
    for loss, model in models.items():
        value = model.loss_of(X, [Y]).item()
        say(f"total {loss} loss: by hand {hand[loss]:.4f}, gpudl {value:.4f}")
        assert np.isclose(value, hand[loss])

    model = models[args.loss]
    before = model.step(X, [Y], lr=args.lr)
    say(f"one SGD step on the {args.loss} loss (lr {args.lr:g}); gradient from gpudl's autograd:")
    for j, name in enumerate(CLASSES):
        say(f"  dL/dW[{name:>4}] = {fmt(model.W.grad.numpy()[j])}   dL/db = {model.b.grad.numpy()[j]:8.3f}")
    say("  new W = W - lr * dW:")
    for row in model.W.numpy():
        say(f"    {fmt(row)}")
    s_new = model.decision_function(X)[0]
    after = model.loss_of(X, [Y]).item()
    say(f"new scores {fmt(s_new)} (were {fmt(s)})")
    say(f"{args.loss} loss {before:.3f} -> {after:.3f}")

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "linear_scores.txt")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"transcript: {path}")


if __name__ == "__main__":
    main()
