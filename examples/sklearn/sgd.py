#!/usr/bin/env python3
"""scikit-learn's SGDClassifier as a tally external model.

A linear classifier (one weight row and one bias per class) trained by
scikit-learn's SGDClassifier with the log loss, one-vs-rest, at a constant
learning rate; tally's momentum is not used (scikit-learn's SGD has none)
and weight_decay is its alpha. Evaluation scores the decision values with
the softmax cross-entropy, as tally's built-in models are scored, so its
loss is comparable with theirs.

    tally client ... --trainer "/usr/bin/python3 examples/sklearn/sgd.py"
"""

import os
import sys
import warnings

import numpy as np
from sklearn.linear_model import SGDClassifier

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import tally_adapter  # noqa: E402


class SGD:
    name = "sklearn-sgd-classifier"

    def __init__(self, hello):
        self.f, self.c = hello["features"], hello["classes"]
        self.seed = hello.get("seed", 0)

    def layout(self):
        return [("coef", (self.c, self.f)), ("intercept", (self.c,))]

    def initial(self):
        return np.zeros(self.c * self.f + self.c)

    def train(self, params, x, y, config, seed):
        coef, intercept = tally_adapter.unflatten(params, self.layout())
        clf = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=config["learning_rate"],
                            alpha=config.get("weight_decay", 0.0) or 1e-12, random_state=seed % (2 ** 32))
        classes = np.arange(self.c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.partial_fit(x[:1], y[:1], classes=classes)  # allocates coef_ for every class
            clf.coef_, clf.intercept_ = coef.copy(), intercept.copy()
            for _ in range(config["epochs"]):
                clf.partial_fit(x, y)
        after = tally_adapter.flatten([clf.coef_, clf.intercept_])
        return {"update": after - params, "samples": len(y), "steps": config["epochs"] * len(y)}

    def evaluate(self, params, x, y, gradients):
        n = len(y)
        w = params[:, :self.c * self.f].reshape(-1, self.c, self.f)
        b = params[:, self.c * self.f:]
        z = np.einsum("nf,bcf->bnc", x, w) + b[:, None, :]
        z = z - z.max(axis=2, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=2, keepdims=True))
        loss = -logp[:, np.arange(n), y].mean(axis=1)
        acc = (z.argmax(axis=2) == y[None, :]).mean(axis=1)
        g = None
        if gradients:
            d = np.exp(logp)
            d[:, np.arange(n), y] -= 1
            d /= n
            g = np.concatenate([np.einsum("bnc,nf->bcf", d, x).reshape(len(params), -1), d.sum(axis=1)], axis=1)
        return {"loss": loss, "accuracy": acc, "gradients": g}


if __name__ == "__main__":
    tally_adapter.serve(SGD)
