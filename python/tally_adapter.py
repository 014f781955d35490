"""Reference adapter for tally's external-model protocol, version 1.

tally (the client with --trainer, the coordinator with model kind external)
starts an adapter as a long-lived subprocess and talks to it over its
standard input and output. This module speaks that protocol so that a model
written in any Python framework only has to provide three things: its
parameter layout and initial values, one local training task, and the
evaluation of a batch of parameter vectors. It needs the standard library
and numpy, nothing else. The protocol is documented in extmodel/doc.go and
docs/external-models.md; in short, every message is one JSON header line
followed by the raw little-endian arrays the header's "payload" lists.

Usage::

    import tally_adapter

    class MyModel:
        def __init__(self, hello):          # hello: features, classes, seed, role
            ...
        name = "my-model"
        def layout(self):                   # [(name, shape), ...], in vector order
            ...
        def initial(self):                  # flat float64 vector
            ...
        def train(self, params, x, y, config, seed):
            ...                             # -> dict(update=..., samples=..., steps=..., loss=...)
        def evaluate(self, params, x, y, gradients):
            ...                             # params (B, N) -> dict(loss=[B], accuracy=[B], gradients=(B, N) or None)

    tally_adapter.serve(MyModel)

Anything the model prints goes to standard error: serve() moves the
protocol's standard output out of reach of print() and of C libraries
before it calls the model.
"""

import json
import os
import sys
import traceback

import numpy as np

PROTOCOL = 1

_DTYPES = {"f64": np.dtype("<f8"), "f32": np.dtype("<f4"), "i32": np.dtype("<i4")}


def unflatten(vector, layout):
    """Split a flat vector into arrays of the layout's shapes (views)."""
    out, off = [], 0
    for _, shape in layout:
        n = int(np.prod(shape))
        out.append(vector[off:off + n].reshape(shape))
        off += n
    if off != len(vector):
        raise ValueError("the layout holds %d values, the vector %d" % (off, len(vector)))
    return out


def flatten(arrays):
    """Concatenate arrays into one float64 vector, in order."""
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])


class ProtocolError(Exception):
    pass


def _read_exact(stream, n):
    chunks, got = [], 0
    while got < n:
        b = stream.read(n - got)
        if not b:
            raise ProtocolError("input ended %d bytes into a %d-byte array" % (got, n))
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def read_message(stream):
    """One message: (header dict, {name: numpy array}), or None at the end."""
    line = stream.readline()
    if not line:
        return None
    header = json.loads(line)
    arrays = {}
    for a in header.get("payload") or []:
        dt = _DTYPES[a["dtype"]]
        shape = tuple(a["shape"])
        n = int(np.prod(shape)) if shape else 1
        arrays[a["name"]] = np.frombuffer(_read_exact(stream, n * dt.itemsize), dtype=dt).reshape(shape)
    return header, arrays


def write_message(stream, header, arrays=()):
    """Write header and arrays ((name, numpy array) pairs) as float64 or int32."""
    payload, blobs = [], []
    for name, arr in arrays:
        arr = np.asarray(arr)
        dt = "i32" if arr.dtype.kind in "iu" else "f64"
        arr = np.ascontiguousarray(arr, dtype=_DTYPES[dt])
        payload.append({"name": name, "dtype": dt, "shape": list(arr.shape)})
        blobs.append(arr.tobytes())
    if payload:
        header = dict(header, payload=payload)
    stream.write(json.dumps(header).encode() + b"\n")
    for b in blobs:
        stream.write(b)
    stream.flush()


def serve(factory, stdin=None, stdout=None):
    """Answer tally's requests until its input closes.

    factory(hello) builds the model from the hello message (a dict with
    features, classes, seed and role). Errors in the model's methods are
    answered with ok false and the message, and serving goes on; tally
    decides whether to restart the adapter.
    """
    if stdout is None:
        # Keep the protocol's stdout to ourselves: fd 1 becomes stderr.
        stdout = os.fdopen(os.dup(1), "wb")
        os.dup2(2, 1)
        sys.stdout = sys.stderr
    if stdin is None:
        stdin = sys.stdin.buffer
    model, data = None, {}
    while True:
        msg = read_message(stdin)
        if msg is None:
            return
        h, arrays = msg
        op = h.get("op")
        try:
            if op == "hello":
                if h.get("protocol") != PROTOCOL:
                    raise ProtocolError("tally speaks protocol %s, this adapter %d" % (h.get("protocol"), PROTOCOL))
                model = factory(h)
                layout = [(n, tuple(int(d) for d in s)) for n, s in model.layout()]
                init = np.asarray(model.initial(), dtype=np.float64).ravel()
                write_message(stdout, {"ok": True, "protocol": PROTOCOL, "name": getattr(model, "name", type(model).__name__),
                                       "layout": [{"name": n, "shape": list(s)} for n, s in layout],
                                       "num_params": int(init.size)}, [("params", init)])
            elif op == "data":
                x = arrays["x"].reshape(h["rows"], h["features"])
                data[h["data"]] = (x, arrays["y"].astype(np.int64))
                write_message(stdout, {"ok": True})
            elif op == "forget":
                data.pop(h["data"], None)
                write_message(stdout, {"ok": True})
            elif op == "train":
                x, y = data[h["data"]]
                r = model.train(arrays["params"].copy(), x, y, h["config"], int(h.get("seed", 0)))
                write_message(stdout, {"ok": True, "samples": int(r.get("samples", len(y))), "steps": int(r.get("steps", 0)),
                                       "metrics": {"loss": float(r.get("loss", 0.0)), "accuracy": float(r.get("accuracy", 0.0))}},
                              [("update", np.asarray(r["update"], dtype=np.float64).ravel())])
            elif op == "evaluate":
                x, y = data[h["data"]]
                params = arrays["params"].reshape(h["count"], -1)
                r = model.evaluate(params, x, y, bool(h.get("gradients")))
                out = []
                if h.get("gradients"):
                    out.append(("gradients", np.asarray(r["gradients"], dtype=np.float64).ravel()))
                write_message(stdout, {"ok": True, "loss": [float(v) for v in r["loss"]],
                                       "accuracy": [float(v) for v in r["accuracy"]]}, out)
            else:
                raise ProtocolError("unknown op %r" % op)
        except ProtocolError:
            raise
        except Exception as e:  # the model's failure, reported to tally
            traceback.print_exc(file=sys.stderr)
            write_message(stdout, {"ok": False, "error": "%s: %s" % (type(e).__name__, e)})
