"""Training-step benchmarks of whole models: ``python -m gpudl.bench models``.

One step = forward, loss, backward, optimizer update, on a fixed random batch,
for gpudl and for the same model written in PyTorch (when installed), timed
alternately in one process by :func:`gpudl.bench.compare`.
"""
from __future__ import annotations

import numpy

from .bench import torch_device

# name -> (batch, input shape, optimizer, gpudl model factory, torch model factory)
MODELS = ("mlp", "lenet5", "lstm", "cifar_cnn", "resnet20")


def _torch_models(torch):
    nn, F = torch.nn, torch.nn.functional

    def mlp():
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))

    def lenet5():
        return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))

    def cifar_cnn():
        c = lambda i, o: [nn.Conv2d(i, o, 3, padding=1), nn.ReLU()]  # noqa: E731
        return nn.Sequential(*c(3, 32), *c(32, 32), nn.MaxPool2d(2), *c(32, 64), *c(64, 64), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(4096, 256), nn.ReLU(), nn.Linear(256, 10))

    class LSTMNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.fc = nn.LSTM(28, 128, batch_first=True), nn.Linear(128, 10)

        def forward(self, x):
            _, (h, _) = self.lstm(x.reshape(x.shape[0], 28, 28))
            return self.fc(h[0])

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
            self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
            self.stride, self.pad = stride, cout - cin

        def forward(self, x):
            out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
            sc = x
            if self.stride != 1 or self.pad:   # option A: subsample and zero-pad channels
                sc = F.pad(x[:, :, ::self.stride, ::self.stride],
                           (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
            return F.relu(out + sc)

    class ResNet20(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
            blocks, cin = [], 16
            for k, w in enumerate((16, 32, 64)):
                for i in range(3):
                    blocks.append(Block(cin, w, 2 if k and not i else 1))
                    cin = w
            self.blocks, self.fc = nn.Sequential(*blocks), nn.Linear(64, 10)

        def forward(self, x):
            out = self.blocks(F.relu(self.bn1(self.conv1(x))))
            return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))

    return {"mlp": mlp, "lenet5": lenet5, "cifar_cnn": cifar_cnn, "lstm": LSTMNet, "resnet20": ResNet20}


_SETUP = {  # name: (batch, input shape, optimizer)
    "mlp": (128, (1, 28, 28), "sgd"),
    "lenet5": (64, (1, 28, 28), "adam"),
    "lstm": (64, (1, 28, 28), "sgd"),
    "cifar_cnn": (64, (3, 32, 32), "sgd"),
    "resnet20": (64, (3, 32, 32), "sgd"),
}


def cases(device, torch, names=MODELS, seed=0):
    """compare()-style cases: one training step of each model."""
    import gpudl
    from gpudl import models, optim
    from gpudl.nn import functional as F
    dev = gpudl.device(device)
    peers = _torch_models(torch) if torch is not None else {}
    out = []
    for name in names:
        batch, shape, opt_name = _SETUP[name]
        rng = numpy.random.default_rng(seed)
        x = rng.standard_normal((batch,) + shape).astype(numpy.float32)
        y = rng.integers(0, 10, batch)
        gpudl.manual_seed(seed)
        gm = models.create(name).to(dev)
        gopt = (optim.Adam(gm.parameters(), lr=1e-3) if opt_name == "adam"
                else optim.SGD(gm.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4))
        gx, gy = gpudl.tensor(x, device=dev), gpudl.tensor(y, device=dev)

        def ours(gm=gm, gopt=gopt, gx=gx, gy=gy):
            loss = F.cross_entropy(gm(gx), gy)
            gopt.zero_grad()
            loss.backward()
            gopt.step()

        case = {"name": f"{name} train step", "shape": f"batch {batch}", "ours": ours,
                "ours_sync": dev.backend.synchronize}
        if name in peers:
            tdev = torch_device(dev.type)
            tm = peers[name]().to(tdev)
            topt = (torch.optim.Adam(tm.parameters(), lr=1e-3) if opt_name == "adam"
                    else torch.optim.SGD(tm.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4))
            tx, ty = torch.from_numpy(x).to(tdev), torch.from_numpy(y).to(tdev)

            def peer(tm=tm, topt=topt, tx=tx, ty=ty):
                loss = torch.nn.functional.cross_entropy(tm(tx), ty)
                topt.zero_grad()
                loss.backward()
                topt.step()

            case["peer"] = peer
            case["peer_sync"] = torch.cuda.synchronize if tdev == "cuda" else None
        out.append(case)
    return out
