// Package extmodel lets a model written in any framework (PyTorch, JAX,
// scikit-learn, plain numpy) train on tally's clients and be evaluated on
// its coordinator. The model runs in an adapter: a long-lived subprocess
// that tally starts with a shell command and talks to over the adapter's
// standard input and output. Model implements model.Model over it, so the
// client (`tally client --trainer COMMAND`) and the coordinator (a job
// whose model is `{kind: external, command: COMMAND}`) use it through the
// interface they already consume; everything else (enrolment, keys,
// encryption, receipts, valuation) stays in tally. The built-in gorgonia
// models remain the default.
//
// # Protocol, version 1
//
// Every message, either way, is one header line, a JSON object ended by
// '\n', followed immediately by the raw bytes of the arrays its "payload"
// field lists, in that order, with no padding:
//
//	{"op":"train", …, "payload":[{"name":"params","dtype":"f64","shape":[2410]}]}\n
//	<2410 × 8 bytes>
//
// dtype is "f64" (IEEE 754 binary64) or "f32" (binary32, accepted from
// adapters for updates and gradients) for floats, "i32" for labels; all
// little-endian, row-major, length the product of the shape. Parameters
// travel as raw floats, never as text. tally sends one request and reads
// its answer before the next; answers carry "ok": true, or "ok": false and
// "error": a message, which tally reports (and on which it restarts the
// adapter, below). The requests:
//
//	hello     protocol, role ("trainer" or "evaluator"), features, classes, seed
//	          → name, layout [{name, shape}…] (the tensors in vector order),
//	            num_params, payload params f64[num_params]: the initial weights,
//	            drawn from the seed
//	data      data (an id), rows, features, payload x f64[rows, features],
//	          y i32[rows] → ok. The adapter keeps it until "forget"; tally
//	          keeps at most 4 datasets in an adapter and sends each once
//	forget    data → ok
//	train     task, data, seed, config {epochs, batch_size, learning_rate,
//	          momentum, weight_decay}, payload params f64[N] (the global model)
//	          → samples (rows trained on, ≥ 1), steps, metrics {loss, accuracy},
//	            payload update f64[N]: Δ = w_local − w_global
//	evaluate  data, count B, gradients (bool), payload params f64[B, N]
//	          → loss [B], accuracy [B] (mean cross-entropy and accuracy of each
//	            vector), and with gradients payload gradients f64[B, N] (the
//	            gradient of the mean loss)
//
// The adapter exits when its input closes. seed in train is derived from
// (job seed, client, round), so a retried task trains the same way; the
// evaluator's batches are what makes valuation affordable, as it scores
// hundreds of coalition models a round: concurrent Evaluate calls on clones
// of one Model are queued and sent together, up to Options.MaxBatch
// (default 64) vectors per request, and Parallelism tells the valuation to
// evaluate that many coalitions at once. The layout lets a framework map
// the flat vector onto its tensors; tally checks that it adds up to
// num_params and that a restarted adapter repeats it.
//
// python/tally_adapter.py is the reference implementation of the adapter
// side (standard library and numpy); examples/pytorch/digits_cnn.py and
// examples/numpy/mlp.py use it. docs/external-models.md says the same as
// this comment, for adapter writers.
//
// # Failures
//
// A call that fails — the adapter crashed (its exit status and the last
// lines of its stderr are quoted), hung past its deadline (the task's
// deadline for a training task, Options.CallTimeout otherwise; it is
// killed, with its process group), answered something that is not the
// protocol, an update or gradient of the wrong length or with a NaN or
// infinity, an error, or after a restart a different layout — kills the
// adapter and is retried once on a fresh one. A second failure is
// returned, wrapping ErrAdapter, ErrProtocol or ErrLayout, and names the
// client, the task, the command and what was wrong; the parameters are
// left as they were. The client then does not submit for that task, and
// the next task starts the adapter again.
//
// # Cost
//
// BenchmarkTrainTask and BenchmarkEvaluateBatch (bench_test.go) measure the
// protocol's overhead: the digits MLP in process (gorgonia) against the
// same network in numpy behind the protocol, per training task and per
// evaluation, singly and in batches of 64, as the ratio x-inprocess;
// BenchmarkProtocolOnly times the pipes alone, with an adapter that
// computes nothing.
package extmodel
