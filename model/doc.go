// Package model holds the classifiers tally trains and values: a Model
// interface whose parameters are one flat []float64, and its gorgonia
// implementations, multinomial logistic regression and a multi-layer
// perceptron.
//
// Everything above this package (aggregation, valuation, the client and
// the coordinator) sees only flat parameter vectors: FedAvg averages them,
// CKKS encrypts them, the valuation sets a coalition's average and calls
// Evaluate. The local training of one client is Train, as in FedAvg
// (McMahan et al., "Communication-Efficient Learning of Deep Networks from
// Decentralized Data", AISTATS 2017); the influence valuation uses
// Gradient on the validation set.
//
// # Contract
//
// The Model interface (model.go) states it: NumParams is fixed for the life
// of a model; Params returns a copy and SetParams copies in, failing with
// ErrParamLength; no method retains a slice it receives; Evaluate and
// Gradient never change the parameters; data that does not fit the model
// (column count, X size, a label outside [0, classes), no rows) fails with
// ErrShape; a bad TrainConfig or a nil rng fails with ErrConfig; a bad Spec
// fails with ErrSpec, every problem at once, each a *FieldError naming the
// field. The same seed, parameters, data and rng give the same bits.
//
// # Concurrency
//
// A Model is not safe for concurrent use: it owns mutable graphs and
// buffers. Callers that evaluate in parallel (the valuation does) take one
// Clone per goroutine; a clone shares nothing with its source, it builds
// its own graphs on first use.
//
// # Architecture and parameter layout
//
// Both kinds are the same fully connected network; logistic regression is
// the case without hidden layers. With widths d₀ = features, d₁…d_{L−1} =
// Spec.Hidden and d_L = classes, layer l maps h (1×d_{l−1}) to
// h·W_l + b_l, followed by the activation (ReLU or tanh) on hidden layers
// and by a softmax on the last. The parameter vector is, layer after layer
// from the input:
//
//	W_l  d_{l−1}×d_l values, row-major: W_l[i][j] (input i → unit j) at i·d_l + j
//	b_l  d_l values
//
// so NumParams = Σ_l (d_{l−1}+1)·d_l; for example 62 for logistic
// regression on 30 features and 2 classes, 2410 for the default MLP (one
// hidden layer of 32) on 64 features and 10 classes. Note that W_l followed
// by b_l is one (d_{l−1}+1)×d_l row-major matrix whose last row is the
// bias; the first layer is computed that way, with a column of ones
// appended to the input, which saves a bias broadcast.
//
// New draws weights from the seed (math/rand/v2 PCG): He-uniform before a
// ReLU (He et al., "Delving Deep into Rectifiers", ICCV 2015), Glorot-
// uniform elsewhere (Glorot & Bengio, "Understanding the difficulty of
// training deep feedforward neural networks", AISTATS 2010); biases are 0.
//
// # Loss, accuracy and training
//
// The loss is the mean softmax cross-entropy, with the log-softmax shifted
// by each row's maximum so that no exponential overflows; accuracy counts
// rows whose largest logit (the first, on ties) is the label. Train runs
// mini-batch SGD with heavy-ball momentum (Polyak, 1964, in the form of
// Sutskever et al., ICML 2013 and PyTorch) and optional L2 weight decay on
// every parameter: v ← μv + ∇L + λw, w ← w − ηv. The velocity starts at
// zero on each call. Each epoch shuffles the rows with the caller's rng;
// the final partial batch is a step of its own, on the mean of its rows.
// TrainStats.Loss is the mean of the batch losses of the last epoch, each
// measured before its step.
//
// # Why gorgonia, and why behind an interface
//
// gorgonia.org/gorgonia v0.9.18 gives symbolic differentiation and a
// compiled tape for these graphs, but it is unmaintained since 2023 and
// panics at start on current Go unless go4.org/unsafe/assume-no-moving-gc
// is pinned to v0.0.0-20231121144256-b99613f794b6 (go.mod does this; see
// docs/DESIGN.md §6). Its tensor log-softmax (gorgonia.org/tensor v0.9.23) shifts
// every row by element 0 of the whole matrix rather than by the row's
// maximum, so this package fuses its own stable softmax cross-entropy op
// (and a one-pass ReLU). Keeping gorgonia behind Model means it can be
// replaced without touching any caller.
//
// # Performance
//
// Evaluate is called thousands of times per round by the valuation, so
// graphs are built once per (purpose, row count) and kept in a small LRU
// cache per model (8 graphs); a call copies the parameters and rows into
// the backing arrays of the graph's existing input tensors and reruns its
// tape. Evaluate and Gradient take at most 512 rows per run and combine
// chunks exactly; a validation set of up to 512 rows is one run. Each run
// costs a fixed ≈45 µs on a 2-core VM because gorgonia's tape machine
// locks the OS thread and executes on a fresh goroutine (RunAll); that is
// most of the time of a small logistic regression evaluation. bench_test.go
// reports samples/s for Train and evals/s for Evaluate.
package model
