"""Draw the first convolution layer's filters of a model as one PNG image grid.

    python examples/visualize_filters.py                                  # resnet20, freshly initialised
    python examples/visualize_filters.py --model alexnet_cifar --out alexnet_filters.png
    python examples/visualize_filters.py --checkpoint runs/cifar10_resnet/checkpoint.npz

Each filter (out_channels of them, each in_channels x k x k) becomes one
tile, scaled to the full 0-255 range on its own: RGB when the layer reads 3
channels, grey otherwise (the first input channel).  Trained first-layer
filters show edges and colour blobs; initialised ones show noise.  The PNG
is written with zlib alone (no imaging library needed).
"""
import argparse
import struct
import zlib

import numpy as np

import gpudl
from gpudl import models, nn


def save_png(path, img):
    """Write uint8 ``img`` ((H, W) grey or (H, W, 3) RGB) as a PNG file."""
    img = np.ascontiguousarray(img, dtype=np.uint8)
    h, w = img.shape[:2]
    rows = np.concatenate([np.zeros((h, 1), np.uint8), img.reshape(h, -1)], axis=1)   # filter type 0 a row

    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    header = struct.pack(">IIBBBBB", w, h, 8, 2 if img.ndim == 3 else 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
                + chunk(b"IEND", b""))


def tile(images, cols=None, scale=1, gap=1):
    """Images (N, h, w[, 3]) as float, each stretched to 0-255 on its own, on a grid with ``gap``-pixel lines."""
    images = np.asarray(images, dtype=np.float64)
    n, h, w = images.shape[:3]
    lo = images.reshape(n, -1).min(1).reshape((n,) + (1,) * (images.ndim - 1))
    hi = images.reshape(n, -1).max(1).reshape(lo.shape)
    images = (images - lo) / np.where(hi > lo, hi - lo, 1) * 255
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    h, w = h * scale, w * scale
    grid = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap) + images.shape[3:], 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[gap + r * (h + gap):gap + r * (h + gap) + h, gap + c * (w + gap):gap + c * (w + gap) + w] = images[i]
    return grid


def add_model_args(p, model="resnet20"):
    """The options the visualisation examples share: --model, --checkpoint, --device, --seed."""
    p.add_argument("--model", default=model, choices=models.names())
    p.add_argument("--checkpoint", default=None, help="a .npz from gpudl train / Trainer / gpudl.save(state_dict) "
                                                     "(default: freshly initialised weights)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)


def load_model(name, checkpoint, device):
    """A registered model, with the weights of ``checkpoint`` (a Trainer checkpoint or a saved state_dict)."""
    model = models.create(name)
    if checkpoint:
        state = gpudl.load(checkpoint)
        model.load_state_dict(state["model"] if "model" in state else state)
        print(f"loaded {checkpoint}")
    return model.to(device).eval()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(p)
    p.add_argument("--scale", type=int, default=8, help="pixels per filter weight")
    p.add_argument("--out", default="filters.png", help="the PNG to write")
    args = p.parse_args()

    gpudl.manual_seed(args.seed)
    model = load_model(args.model, args.checkpoint, gpudl.device(args.device))
    name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    w = conv.weight.detach().numpy()                                   # (out, in, k, k)
    tiles = w.transpose(0, 2, 3, 1) if w.shape[1] == 3 else w[:, 0]
    save_png(args.out, tile(tiles, scale=args.scale))
    print(f"{args.model}.{name}: {w.shape[0]} filters of {w.shape[1]}x{w.shape[2]}x{w.shape[3]} -> {args.out}")


if __name__ == "__main__":
    main()
