"""Save the feature maps of one image as it passes through a CNN's layers, one PNG a layer.

    python examples/feature_maps.py                          # resnet20, a CIFAR-10 test image if present
    python examples/feature_maps.py --model vgg11 --image 7 --checkpoint runs/vgg11-cifar10/checkpoint.npz
    python examples/feature_maps.py --out maps/ --layers layer1 layer3

Forward hooks record the output of the first convolution and of every ReLU,
max pool and residual block; each output's channels are tiled into one grey
image (each channel stretched to 0-255 on its own), enlarged so that even
the 8x8 maps of the last stage are visible.  The image is CIFAR-10 test image
``--image`` when the data set is found (never downloaded here), else a drawn
stand-in (a red disc on a blue-green gradient).
"""
import argparse
import os

import numpy as np

import gpudl
from gpudl import data, nn
from gpudl.models.resnet import BasicBlock

from visualize_filters import add_model_args, load_model, save_png, tile


def drawn_image():
    """A (3, 32, 32) uint8 stand-in: a red disc on a diagonal blue-green gradient."""
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    img = np.stack([0.1 + 0.0 * xx, 0.3 + 0.5 * xx, 0.9 - 0.6 * yy])
    disc = (yy - 0.45) ** 2 + (xx - 0.55) ** 2 < 0.06
    img[:, disc] = np.array([0.9, 0.15, 0.1])[:, None]
    return (img * 255).astype(np.uint8)


def pick_image(index, root):
    try:
        test = data.cifar10("test", root=root, download=False)
        return test.images[index], f"CIFAR-10 test image {index} ({test.classes[test.labels[index]]})"
    except (FileNotFoundError, data.DataFileError):
        return drawn_image(), "a drawn stand-in (no CIFAR-10 found)"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(p)
    p.add_argument("--image", type=int, default=0, help="index of the CIFAR-10 test image")
    p.add_argument("--data-root", default=None)
    p.add_argument("--layers", nargs="*", default=None, help="only layers whose name contains one of these")
    p.add_argument("--max-channels", type=int, default=64, help="at most this many channels a layer")
    p.add_argument("--out", default="feature_maps", help="folder for the PNGs")
    args = p.parse_args()

    gpudl.manual_seed(args.seed)
    dev = gpudl.device(args.device)
    model = load_model(args.model, args.checkpoint, dev)
    img, what = pick_image(args.image, args.data_root)
    os.makedirs(args.out, exist_ok=True)
    save_png(os.path.join(args.out, "00-input.png"), tile(img.transpose(1, 2, 0)[None], scale=4))

    maps = []
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    for name, m in model.named_modules():
        if (m is first_conv or isinstance(m, (nn.ReLU, nn.MaxPool2d, BasicBlock))) and \
                (not args.layers or any(s in name for s in args.layers)):
            m.register_forward_hook(lambda mod, inp, out, name=name: maps.append((name, out.detach().numpy()[0])))
    _, normalize = data.cifar10_transforms(augment=False)
    x = normalize(gpudl.tensor(img[None] / np.float32(255)).to(dev))
    with gpudl.no_grad():
        pred = int(model(x).argmax(1).item())

    for i, (name, fmap) in enumerate(maps, 1):
        c, h, _ = fmap.shape
        path = os.path.join(args.out, f"{i:02d}-{name.replace('.', '_')}.png")
        save_png(path, tile(fmap[:args.max_channels], scale=max(1, 64 // h)))
        print(f"{name:24s} {c:4d} x {h:2d} x {fmap.shape[2]:2d} -> {path}")
    print(f"{args.model} on {what}: predicted class {pred}; {len(maps)} layers in {args.out}/")


if __name__ == "__main__":
    main()
