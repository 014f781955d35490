#!/usr/bin/env python3
"""tally's built-in MLP, written again in plain numpy, as an external model.

The same network, parameter layout and optimiser as model/ (see
model/doc.go): fully connected layers W_l (in x out, row-major) then b_l,
ReLU or tanh on hidden layers, mean softmax cross-entropy, mini-batch SGD
with heavy-ball momentum and L2 weight decay. It shows that the protocol
does not care about the framework, and it is what the protocol's overhead
is measured with (extmodel's benchmarks): a built-in model and this one
compute the same thing, so the difference in time is the protocol's.

    tally client ... --trainer "/usr/bin/python3 examples/numpy/mlp.py --hidden 32"
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import tally_adapter  # noqa: E402


class MLP:
    def __init__(self, hello, hidden, activation):
        self.widths = [hello["features"]] + hidden + [hello["classes"]]
        self.act = activation
        self.seed = hello.get("seed", 0)
        self.name = "numpy-mlp%s" % hidden if hidden else "numpy-logreg"

    def layout(self):
        out = []
        for l in range(len(self.widths) - 1):
            out.append(("layer%d.weight" % l, (self.widths[l], self.widths[l + 1])))
            out.append(("layer%d.bias" % l, (self.widths[l + 1],)))
        return out

    def initial(self):
        rng = np.random.default_rng(self.seed)
        parts = []
        for l in range(len(self.widths) - 1):
            i, o = self.widths[l], self.widths[l + 1]
            relu_next = l + 2 < len(self.widths) and self.act == "relu"
            limit = np.sqrt(6.0 / i) if relu_next else np.sqrt(6.0 / (i + o))
            parts += [rng.uniform(-limit, limit, size=(i, o)), np.zeros(o)]
        return tally_adapter.flatten(parts)

    def _split(self, params):
        """params (B, N) -> [(W (B, i, o), b (B, o)), ...]"""
        out, off = [], 0
        for l in range(len(self.widths) - 1):
            i, o = self.widths[l], self.widths[l + 1]
            w = params[:, off:off + i * o].reshape(-1, i, o)
            off += i * o
            b = params[:, off:off + o]
            off += o
            out.append((w, b))
        return out

    def _forward(self, params, x):
        """Logits (B, n, C) and the activations of every layer."""
        layers = self._split(params)
        bsz = params.shape[0]
        acts = [np.broadcast_to(x, (bsz,) + x.shape)]
        for l, (w, b) in enumerate(layers):
            if l == 0:
                # Every vector's first layer in one matrix product:
                # x (n, i) times the weights side by side (i, B·o).
                i, o = w.shape[1], w.shape[2]
                z = np.ascontiguousarray((x @ w.transpose(1, 0, 2).reshape(i, bsz * o)).reshape(len(x), bsz, o).transpose(1, 0, 2))
                z = z + b[:, None, :]
            else:
                z = np.matmul(h, w) + b[:, None, :]
            if l + 1 < len(layers):
                h = np.maximum(z, 0) if self.act == "relu" else np.tanh(z)
                acts.append(h)
            else:
                h = z
        return h, acts, layers

    def _loss_grad(self, params, x, y, gradients):
        logits, acts, layers = self._forward(params, x)
        z = logits - logits.max(axis=2, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=2, keepdims=True))
        n = len(y)
        loss = -logp[:, np.arange(n), y].mean(axis=1)
        acc = (logits.argmax(axis=2) == y[None, :]).mean(axis=1)
        if not gradients:
            return loss, acc, None
        d = np.exp(logp)
        d[:, np.arange(n), y] -= 1
        d /= n
        grads = []
        for l in range(len(layers) - 1, -1, -1):
            w, _ = layers[l]
            h = acts[l]
            grads.append(d.sum(axis=1))                   # bias
            grads.append(np.matmul(h.transpose(0, 2, 1), d))  # weight
            if l > 0:
                d = np.matmul(d, w.transpose(0, 2, 1))
                d = d * (acts[l] > 0) if self.act == "relu" else d * (1 - acts[l] ** 2)
        grads.reverse()
        flat = np.concatenate([g.reshape(params.shape[0], -1) for g in grads], axis=1)
        return loss, acc, flat

    def train(self, params, x, y, config, seed):
        rng = np.random.default_rng(seed)
        w = params.copy()
        v = np.zeros_like(w)
        bs, lr = config["batch_size"], config["learning_rate"]
        mu, wd = config.get("momentum", 0.0), config.get("weight_decay", 0.0)
        steps, losses = 0, []
        for _ in range(config["epochs"]):
            order = rng.permutation(len(y))
            losses = []
            for lo in range(0, len(y), bs):
                idx = order[lo:lo + bs]
                loss, _, g = self._loss_grad(w[None, :], x[idx], y[idx], True)
                v = mu * v + g[0] + wd * w
                w = w - lr * v
                losses.append(loss[0])
                steps += 1
        return {"update": w - params, "samples": len(y), "steps": steps, "loss": float(np.mean(losses))}

    def evaluate(self, params, x, y, gradients):
        loss, acc, g = self._loss_grad(params, x, y, gradients)
        return {"loss": loss, "accuracy": acc, "gradients": g}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", default="32", help="hidden widths, comma-separated; empty for softmax regression")
    ap.add_argument("--activation", default="relu", choices=["relu", "tanh"])
    a = ap.parse_args()
    hidden = [int(h) for h in a.hidden.split(",") if h.strip()]
    tally_adapter.serve(lambda hello: MLP(hello, hidden, a.activation))


if __name__ == "__main__":
    main()
