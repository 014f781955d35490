#!/usr/bin/env python3
"""The CNN side of `tally audit`: releases of the bring-your-own-model CNN,
and the attacks on them, which need the CNN's gradients (torch autograd).

Package audit (cnn.go) drives this script: it picks every row and seed and
sends them as one JSON request on stdin; the script answers one JSON object
on stdout, and Go scores it with the same metrics as the built-in models.
The network and its local training are examples/pytorch/digits_cnn.py's
own (DigitsCNN.train, the trainer a tally client runs with --trainer), so
the updates attacked are those the external-model path releases.

Per release (the rows of the clients summed, each client's update Δᵢ from
the same global model), the coordinator's view is Σ nᵢΔᵢ and Σ nᵢ. The
script answers:

  labels      the release's label counts, from the last layer's bias:
              Δb ≈ −η·Ω·(p̄ − π), π̂ = p̄ + Δb/(η·Ω) projected onto the simplex
              (iDLG for one row; labelShares in audit/attack.go);
  candidates  gradient matching (DLG, Zhu et al. 2019, in the cosine form of
              Geiping et al. 2020): one dummy image per row, with the
              inferred labels, moved by Adam until the mean gradient at the
              global model points along −Δ, within the pixel range;
  members     for each row behind the release and each non-member row Go
              chose, the cosine between −Σ nᵢΔᵢ and the row's gradient.

Everything is float64 on one thread and seeded from the request, so the
same request gives the same answer.
"""

import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples", "pytorch"))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
import digits_cnn  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


def step_weight(rows, cfg):
    """Σ_s ω_s of momentum SGD over the steps of one client (stepWeight in attack.go)."""
    steps = cfg["epochs"] * ((rows + cfg["batch_size"] - 1) // cfg["batch_size"])
    mu = cfg.get("momentum", 0.0)
    if mu == 0:
        return float(steps)
    return sum((1 - mu ** (steps - s + 1)) / (1 - mu) for s in range(1, steps + 1))


def project_simplex(v):
    """Euclidean projection onto the probability simplex (Duchi et al. 2008)."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u)
    rho = np.nonzero(u * np.arange(1, len(v) + 1) > (css - 1))[0][-1]
    theta = (css[rho] - 1) / (rho + 1.0)
    return np.maximum(v - theta, 0)


def counts_from_shares(shares, n):
    """Largest-remainder rounding of shares to n counts (countsFromShares)."""
    raw = shares * n
    base = np.floor(raw).astype(int)
    for j in np.argsort(-(raw - base), kind="stable")[: n - base.sum()]:
        base[j] += 1
    return base


class Attack:
    def __init__(self, req):
        self.req = req
        self.cfg = req["train"]
        self.classes = req["classes"]
        self.val_x = torch.tensor(req["val"]["x"], dtype=torch.float64)
        self.test_x = torch.tensor(req["test"]["x"], dtype=torch.float64)
        self.test_y = torch.tensor(req["test"]["y"], dtype=torch.int64)
        self.mean = self.val_x.mean(dim=0)
        self.std = self.val_x.std(dim=0).clamp_min(0.5)

    def model(self, seed):
        return digits_cnn.DigitsCNN({"features": 64, "classes": self.classes, "seed": seed})

    def grad(self, m, w, x, y, create_graph=False):
        """The mean loss gradient at parameters w, as one vector."""
        m._load(w)
        m.net.eval()
        loss = m.loss(m.net(x), y)
        gs = torch.autograd.grad(loss, m.params, create_graph=create_graph)
        return torch.cat([g.reshape(-1) for g in gs])

    def labels(self, m, w, avg, per):
        with torch.no_grad():
            pbar = np.zeros(self.classes)
            for params in (w, w + avg):
                m._load(params)
                pbar += torch.softmax(m.net(self.val_x), dim=1).mean(dim=0).numpy()
            pbar /= 2
        db = avg[-self.classes:]  # the last layer's bias: out.bias is the last parameter
        scale = self.cfg["learning_rate"] * step_weight(per, self.cfg)
        return project_simplex(pbar + db / scale)

    def match(self, m, w, avg, labels, seed):
        n = len(labels)
        if n == 0 or self.req["match_iters"] <= 0:
            return []
        target = -torch.tensor(avg, dtype=torch.float64)
        if target.norm() == 0:
            return []
        gen = torch.Generator().manual_seed(seed)
        x = (self.mean + 0.5 * self.std * torch.randn(n, 64, generator=gen, dtype=torch.float64)).clamp(0, 16)
        x.requires_grad_(True)
        y = torch.tensor(labels, dtype=torch.int64)
        # Adam's step in pixels: matchLR (0.05 standard deviations) of the
        # built-in models' attack, times a digit pixel's spread of about 5.
        opt = torch.optim.Adam([x], lr=self.req["match_lr"])
        for _ in range(self.req["match_iters"]):
            opt.zero_grad()
            g = self.grad(m, w, x, y, create_graph=True)
            loss = 1 - torch.nn.functional.cosine_similarity(g, target, dim=0)
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 16)
        return x.detach().numpy().tolist()

    def membership(self, m, w, total, xs, ys):
        t = -torch.tensor(total, dtype=torch.float64)
        out = []
        for x, y in zip(xs, ys):
            g = self.grad(m, w, x[None, :], y[None])
            out.append(torch.nn.functional.cosine_similarity(g, t, dim=0).item())
        return out

    def trial(self, tr):
        m = self.model(tr["init_seed"])
        w = m.initial()
        clients = []
        for c in tr["clients"]:
            x = np.array(c["x"], dtype=np.float64)
            y = np.array(c["y"], dtype=np.int64)
            r = m.train(w, x, y, self.cfg, c["seed"])
            clients.append((x, y, r["update"], r["samples"]))
        out = []
        for i, rel in enumerate(tr["releases"]):
            members = rel["members"]
            total = sum(clients[c][3] * clients[c][2] for c in members)
            n = sum(clients[c][3] for c in members)
            per = int(round(n / len(members)))
            avg = total / n
            shares = self.labels(m, w, avg, per)
            counts = counts_from_shares(shares, n)
            lab = [j for j in range(self.classes) for _ in range(counts[j])]
            cands = self.match(m, w, avg, lab, rel["match_seed"])
            xs = torch.tensor(np.concatenate([clients[c][0] for c in members]), dtype=torch.float64)
            ys = torch.tensor(np.concatenate([clients[c][1] for c in members]), dtype=torch.int64)
            non = rel["nonmembers"]
            out.append({
                "labels": counts.tolist(),
                "candidates": cands,
                "members": self.membership(m, w, total, xs, ys),
                "nonmembers": self.membership(m, w, total, self.test_x[non], self.test_y[non]),
            })
        return {"releases": out}


def main():
    req = json.load(sys.stdin)
    a = Attack(req)
    json.dump({"trials": [a.trial(t) for t in req["trials"]]}, sys.stdout)


if __name__ == "__main__":
    main()
