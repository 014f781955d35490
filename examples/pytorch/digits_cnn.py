#!/usr/bin/env python3
"""A small PyTorch CNN on the 8x8 digits, as a tally external model.

tally sends each row as the 64 pixel intensities (0 to 16) of an 8x8
image; the network divides them by 16 and reads them as a 1x8x8 image, so
the job needs no feature scaling (scaling: none). The same script is the client's trainer, the
coordinator's evaluator, and (with the subcommand `central`) the
centralised baseline trained on the union of the clients' CSV files:

    tally client ... --trainer "/usr/bin/python3 examples/pytorch/digits_cnn.py"
    # job file:  model: {kind: external, command: "/usr/bin/python3 examples/pytorch/digits_cnn.py"}
    /usr/bin/python3 examples/pytorch/digits_cnn.py central --train DIR/client-*.csv --test DIR/test.csv --epochs 20

Training is SGD with momentum and weight decay, which in PyTorch's form
(v <- mu v + g + lambda w, w <- w - eta v) is tally's built-in optimiser.
"""

import argparse
import os
import sys
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import tally_adapter  # noqa: E402

# Several adapters (a coordinator and its clients) may share a small
# machine; one thread each keeps them from fighting over the cores.
torch.set_num_threads(int(os.environ.get("TALLY_TORCH_THREADS", "1")))


class Scale(nn.Module):
    """Multiplies by a constant: the digits' intensities 0..16 to 0..1."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def network(classes):
    return nn.Sequential(OrderedDict([
        ("image", nn.Unflatten(1, (1, 8, 8))),
        ("scale", Scale(1 / 16)),
        ("conv1", nn.Conv2d(1, 8, 3, padding=1)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),   # 8x4x4
        ("conv2", nn.Conv2d(8, 16, 3, padding=1)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),  # 16x2x2
        ("flat", nn.Flatten()), ("out", nn.Linear(64, classes)),
    ]))


class DigitsCNN:
    name = "pytorch-digits-cnn"

    def __init__(self, hello):
        if hello["features"] != 64:
            raise ValueError("the digits CNN reads 64 pixels (8x8), the job has %d features" % hello["features"])
        torch.manual_seed(hello.get("seed", 0))
        self.net = network(hello["classes"]).double()
        self.params = list(self.net.parameters())
        self.names = [n for n, _ in self.net.named_parameters()]
        self.loss = nn.CrossEntropyLoss()

    def layout(self):
        return [(n, tuple(p.shape)) for n, p in zip(self.names, self.params)]

    def initial(self):
        return nn.utils.parameters_to_vector(self.params).detach().numpy()

    def _load(self, vector):
        # A copy: vector_to_parameters makes the parameters views of the
        # tensor it is given, and training must not write into the caller's
        # vector (the update is after - before).
        nn.utils.vector_to_parameters(torch.tensor(vector, dtype=torch.float64), self.params)

    def train(self, params, x, y, config, seed):
        self._load(params)
        x, y = torch.tensor(x), torch.tensor(y)
        opt = torch.optim.SGD(self.params, lr=config["learning_rate"], momentum=config.get("momentum", 0.0),
                              weight_decay=config.get("weight_decay", 0.0))
        gen = torch.Generator().manual_seed(seed)
        steps, losses = 0, []
        self.net.train()
        for _ in range(config["epochs"]):
            order = torch.randperm(len(y), generator=gen)
            losses = []
            for lo in range(0, len(y), config["batch_size"]):
                idx = order[lo:lo + config["batch_size"]]
                opt.zero_grad()
                loss = self.loss(self.net(x[idx]), y[idx])
                loss.backward()
                opt.step()
                losses.append(loss.item())
                steps += 1
        after = nn.utils.parameters_to_vector(self.params).detach().numpy()
        return {"update": after - params, "samples": len(y), "steps": steps, "loss": float(np.mean(losses))}

    def evaluate(self, params, x, y, gradients):
        x, y = torch.tensor(x), torch.tensor(y)
        self.net.eval()
        losses, accs, grads = [], [], []
        for vector in params:
            self._load(vector)
            if gradients:
                self.net.zero_grad()
                logits = self.net(x)
                loss = self.loss(logits, y)
                loss.backward()
                grads.append(torch.cat([p.grad.reshape(-1) for p in self.params]).numpy().copy())
            else:
                with torch.no_grad():
                    logits = self.net(x)
                    loss = self.loss(logits, y)
            losses.append(loss.item())
            accs.append((logits.argmax(dim=1) == y).double().mean().item())
        return {"loss": losses, "accuracy": accs, "gradients": np.stack(grads) if gradients else None}


def load_csv(path):
    """A CSV written by `tally data`: a header, features, the label last."""
    a = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return a[:, :-1], a[:, -1].astype(np.int64)


def central(args):
    """The same network trained on the union of the clients' data."""
    parts = [load_csv(p) for p in args.train]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    tx, ty = load_csv(args.test)
    m = DigitsCNN({"features": x.shape[1], "classes": args.classes, "seed": args.seed})
    cfg = {"epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.lr, "momentum": args.momentum,
           "weight_decay": args.weight_decay}
    w = m.initial()
    r = m.train(w, x, y, cfg, args.seed)
    res = m.evaluate((w + r["update"])[None, :], tx, ty, False)
    print("centralised test accuracy %.4f (loss %.4f; %d rows, %d epochs)" % (res["accuracy"][0], res["loss"][0], len(y), args.epochs))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "central":
        ap = argparse.ArgumentParser(prog="digits_cnn.py central", description=central.__doc__)
        ap.add_argument("--train", nargs="+", required=True, help="the clients' CSV files")
        ap.add_argument("--test", required=True)
        ap.add_argument("--classes", type=int, default=10)
        ap.add_argument("--epochs", type=int, default=20, help="rounds x local epochs of the federated job")
        ap.add_argument("--batch-size", type=int, default=16)
        ap.add_argument("--lr", type=float, default=0.05)
        ap.add_argument("--momentum", type=float, default=0.9)
        ap.add_argument("--weight-decay", type=float, default=0.0)
        ap.add_argument("--seed", type=int, default=1)
        central(ap.parse_args(sys.argv[2:]))
        return
    tally_adapter.serve(DigitsCNN)


if __name__ == "__main__":
    main()
