"""A character-level LSTM language model: train on a text, then sample from it with a temperature.

    python examples/char_rnn.py [--text zen | module:NAME | PATH] [--steps 500]
                                [--temperature 0.8] [--device auto] [--out runs/char_rnn]

The default text is the Zen of Python, decoded from the standard library's
``this`` module; ``module:textwrap`` trains on a standard module's source,
any other value is read as a UTF-8 file.  Model: Embedding -> LSTM -> Linear
over the characters, trained with cross-entropy on random windows of the
text (Adam, gradient norm clipped).  Sampling feeds one character at a time
and carries the LSTM's (h, c) from step to step; a temperature below 1 makes
the samples more conservative, above 1 more adventurous.
"""
import argparse
import codecs
import contextlib
import importlib
import inspect
import io
import os
import time

import numpy as np

import gpudl
import gpudl.nn as nn
import gpudl.nn.functional as F
import gpudl.optim as optim


def load_text(spec):
    if spec == "zen":
        with contextlib.redirect_stdout(io.StringIO()):   # importing `this` prints the Zen
            import this
        return codecs.decode(this.s, "rot13")             # stored rot13-encoded
    if spec.startswith("module:"):
        return inspect.getsource(importlib.import_module(spec[len("module:"):]))
    with open(spec, encoding="utf-8") as f:
        return f.read()


class CharLSTM(nn.Module):
    def __init__(self, vocab, embed=32, hidden=256, layers=1):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, ids, state=None):
        """ids (N, T) -> logits (N, T, vocab), (h, c)."""
        out, state = self.lstm(self.embed(ids), state)
        return self.head(out), state


def sample(model, stoi, itos, prime, length, temperature, rng, device):
    """``prime`` continued by ``length`` characters drawn one at a time."""
    model.eval()
    ids = [stoi[c] for c in prime if c in stoi] or [0]
    with gpudl.no_grad():
        logits, state = model(gpudl.tensor(np.array([ids]), device=device))
        out = list(prime)
        for _ in range(length):
            z = logits[0, -1].numpy().astype(np.float64) / max(temperature, 1e-6)
            p = np.exp(z - z.max())
            nxt = int(rng.choice(len(p), p=p / p.sum()))
            out.append(itos[nxt])
            logits, state = model(gpudl.tensor(np.array([[nxt]]), device=device), state)
    model.train()
    return "".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--text", default="zen", help="'zen', 'module:NAME' or a path to a UTF-8 text file")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--sample-len", type=int, default=300)
    p.add_argument("--prime", default="Beautiful is ")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/char_rnn")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    text = load_text(args.text)
    if len(text) < args.seq_len + 2:
        p.error(f"the text has {len(text)} characters; it needs more than --seq-len + 1")
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = np.array([stoi[c] for c in text], dtype=np.int64)
    gpudl.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    dev = gpudl.device(args.device)
    model = CharLSTM(len(chars), hidden=args.hidden, layers=args.layers).to(dev)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    print(f"{len(text):,} characters, {len(chars)} distinct; {sum(q.numel() for q in model.parameters()):,} "
          f"parameters; {args.steps} steps of {args.batch_size} windows of {args.seq_len} on {dev}")
    print(f"a uniform guess costs ln({len(chars)}) = {np.log(len(chars)):.2f} nats per character")

    os.makedirs(args.out, exist_ok=True)
    log = []
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        starts = rng.integers(0, len(data) - args.seq_len - 1, args.batch_size)
        window = data[starts[:, None] + np.arange(args.seq_len + 1)]
        x, y = (gpudl.tensor(a, device=dev) for a in (window[:, :-1], window[:, 1:]))
        logits, _ = model(x)
        loss = F.cross_entropy(logits.reshape(-1, len(chars)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        log.append(loss.item())
        if step % 100 == 0 or step == args.steps:
            print(f"step {step:5d}  loss {np.mean(log[-100:]):.3f} nats/char  ({time.perf_counter() - t0:.0f} s)")
            print("   " + sample(model, stoi, chars, args.prime, 80, args.temperature, rng, dev)
                  .replace("\n", "\n   "))

    text_out = sample(model, stoi, chars, args.prime, args.sample_len, args.temperature, rng, dev)
    print(f"\n--- sample at temperature {args.temperature} ---\n{text_out}\n---")
    with open(os.path.join(args.out, "sample.txt"), "w", encoding="utf-8") as f:
        f.write(text_out)
    with open(os.path.join(args.out, "loss.csv"), "w", encoding="utf-8") as f:
        f.write("step,loss\n" + "".join(f"{i + 1},{v:.5f}\n" for i, v in enumerate(log)))
    gpudl.save({"model": model.state_dict(), "chars": np.array([ord(c) for c in chars])},
               os.path.join(args.out, "model.npz"))
    print(f"wrote {args.out}/sample.txt, loss.csv and model.npz")


if __name__ == "__main__":
    main()
