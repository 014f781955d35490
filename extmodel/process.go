package extmodel

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tallyfl/tally/model"
)

// Sentinel errors. Callers check them with errors.Is; the message around
// them names the command, client, task and what was wrong.
var (
	// ErrAdapter: the adapter process could not be started, crashed, hung
	// past its timeout, or answered with an error.
	ErrAdapter = errors.New("extmodel: the model adapter failed")
	// ErrProtocol: the adapter's output does not follow the protocol (a
	// header that is not JSON, a payload shorter than announced, an
	// answer of the wrong length, a non-finite value, a layout that
	// changed).
	ErrProtocol = errors.New("extmodel: the model adapter broke the protocol")
	// ErrLayout: a restarted adapter describes another parameter layout
	// than the one it started with; retrying would not help.
	ErrLayout = errors.New("extmodel: the model adapter's parameter layout changed")
	// ErrConfig: the options are unusable (no command, bad shape).
	ErrConfig = errors.New("extmodel: invalid options")
)

// Roles a process is started in; the adapter may refuse a role it does not
// implement (an evaluator needs no optimiser).
const (
	RoleTrainer   = "trainer"
	RoleEvaluator = "evaluator"
)

// Defaults of Options.
const (
	// DefaultStartTimeout bounds the start and hello of an adapter:
	// importing torch takes 2–5 s on a 2-core machine, cold caches more.
	DefaultStartTimeout = 2 * time.Minute
	// DefaultCallTimeout bounds one train or evaluate call when no task
	// deadline is set (see Model.BeginTask).
	DefaultCallTimeout = 10 * time.Minute
	// DefaultMaxBatch is the most parameter vectors sent in one evaluate
	// request; it is also the number of concurrent evaluations Parallelism
	// invites. Exact Shapley over 6 clients asks for 64 coalitions at once.
	DefaultMaxBatch = 64
	// keptData is how many datasets an adapter holds at once (a client's
	// scaled training data, the coordinator's validation data per scaler).
	keptData = 4
)

// Options describe one adapter process.
type Options struct {
	// Command is run by /bin/sh -c COMMAND (in a process group of its
	// own, killed whole), so it may hold
	// arguments, quotes and environment variables.
	Command string
	// Dir is the working directory ("" = tally's).
	Dir string
	// Role is RoleTrainer or RoleEvaluator.
	Role string
	// Features, Classes and Seed are the job's; the adapter builds its
	// model for them and draws its initial weights from Seed.
	Features, Classes int
	Seed              uint64
	// Stderr receives the adapter's standard error (nil: tally's stderr);
	// its last lines are also quoted in errors.
	Stderr io.Writer
	// StartTimeout and CallTimeout: 0 means the defaults.
	StartTimeout, CallTimeout time.Duration
	// MaxBatch bounds an evaluate request (0: DefaultMaxBatch).
	MaxBatch int
	// Log receives restarts; nil discards.
	Log *slog.Logger
}

// Process is a running adapter and the protocol spoken with it. Its
// methods are safe for concurrent use: calls are serialised over the
// pipes, and concurrent evaluations of the same data are sent together as
// one batch.
//
// A call that fails (crash, hang, malformed or non-finite answer, error
// answer) kills the process; the next call starts a new one, which must
// describe the same layout. Train and Evaluate retry a failed call once on
// a new process before returning the error.
type Process struct {
	opts Options
	log  *slog.Logger

	io       sync.Mutex // held for one exchange with the adapter
	cmd      *exec.Cmd
	in       *bufio.Writer
	inClose  io.Closer
	out      *bufio.Reader
	tail     *tailBuffer
	waitErr  chan error // the cmd's exit status, once
	sent     []*sentData
	nextData int
	closed   bool

	// Set by the first hello, fixed afterwards.
	name    string
	layout  []Tensor
	initial []float64

	mu      sync.Mutex // guards pending and flushing
	pending []*evalCall
	busy    bool

	restarts int
}

type sentData struct {
	id   string
	x    *float64
	y    *int
	rows int
	feat int
	keep model.Examples // holds the slices so their addresses stay unique
}

// Start runs the adapter and asks it to describe its model.
func Start(opts Options) (*Process, error) {
	if strings.TrimSpace(opts.Command) == "" {
		return nil, fmt.Errorf("%w: no command", ErrConfig)
	}
	if opts.Role != RoleTrainer && opts.Role != RoleEvaluator {
		return nil, fmt.Errorf("%w: role %q, want %q or %q", ErrConfig, opts.Role, RoleTrainer, RoleEvaluator)
	}
	if opts.Features < 1 || opts.Classes < 2 {
		return nil, fmt.Errorf("%w: %d features and %d classes, want ≥ 1 and ≥ 2", ErrConfig, opts.Features, opts.Classes)
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = DefaultStartTimeout
	}
	if opts.CallTimeout == 0 {
		opts.CallTimeout = DefaultCallTimeout
	}
	if opts.MaxBatch == 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	p := &Process{opts: opts, log: opts.Log}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.io.Lock()
	defer p.io.Unlock()
	if err := p.startLocked(); err != nil {
		p.killLocked()
		return nil, err
	}
	return p, nil
}

// Name is the model's name as the adapter gave it.
func (p *Process) Name() string { return p.name }

// Layout is the parameter layout the adapter described (a copy).
func (p *Process) Layout() []Tensor { return slices.Clone(p.layout) }

// NumParams is the length of the parameter vector.
func (p *Process) NumParams() int { return len(p.initial) }

// Restarts counts the adapter processes started after the first.
func (p *Process) Restarts() int {
	p.io.Lock()
	defer p.io.Unlock()
	return p.restarts
}

// Close ends the adapter: it closes its input, which asks it to exit, and
// kills it if it has not within a second.
func (p *Process) Close() error {
	p.io.Lock()
	defer p.io.Unlock()
	p.closed = true
	if p.cmd == nil {
		return nil
	}
	p.inClose.Close()
	select {
	case <-p.waitErr:
	case <-time.After(time.Second):
	}
	p.killLocked()
	return nil
}

// Model returns a model.Model over this process with the adapter's
// initial parameters.
func (p *Process) Model() *Model {
	return &Model{p: p, params: slices.Clone(p.initial)}
}

func (p *Process) what() string {
	return fmt.Sprintf("%s %q", p.opts.Role, p.opts.Command)
}

// startLocked starts the process and says hello; the first hello fixes
// the layout, later ones must repeat it.
func (p *Process) startLocked() error {
	if p.closed {
		return fmt.Errorf("%w: %s: closed", ErrAdapter, p.what())
	}
	cmd := exec.Command("/bin/sh", "-c", p.opts.Command)
	cmd.Dir = p.opts.Dir
	setProcessGroup(cmd)
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	p.tail = &tailBuffer{max: 4096}
	cmd.Stderr = io.MultiWriter(p.opts.Stderr, p.tail)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%w: %s: start: %v", ErrAdapter, p.what(), err)
	}
	p.cmd, p.in, p.inClose, p.out = cmd, bufio.NewWriterSize(in, 1<<16), in, bufio.NewReaderSize(out, 1<<16)
	p.waitErr = make(chan error, 1)
	go func(c *exec.Cmd, ch chan error) { ch <- c.Wait() }(cmd, p.waitErr)
	p.sent = nil
	ans, err := p.exchangeLocked(header{Op: "hello", Protocol: ProtocolVersion, Role: p.opts.Role,
		Features: p.opts.Features, Classes: p.opts.Classes, Seed: p.opts.Seed}, nil, nil, p.opts.StartTimeout)
	if err != nil {
		return err
	}
	if ans.Protocol != ProtocolVersion {
		return fmt.Errorf("%w: %s speaks protocol version %d, tally %d", ErrProtocol, p.what(), ans.Protocol, ProtocolVersion)
	}
	if err := checkLayout(ans.Layout, ans.NumParams); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrProtocol, p.what(), err)
	}
	init, ok := ans.floats["params"]
	if !ok || len(init) != ans.NumParams {
		return fmt.Errorf("%w: %s: hello announced %d parameters and sent %d initial values", ErrProtocol, p.what(), ans.NumParams, len(init))
	}
	if i := firstNonFinite(init); i >= 0 {
		return fmt.Errorf("%w: %s: initial parameter %d is %v", ErrProtocol, p.what(), i, init[i])
	}
	if p.layout == nil {
		p.name, p.layout, p.initial = ans.Name, ans.Layout, init
		return nil
	}
	if !sameLayout(p.layout, ans.Layout) {
		return fmt.Errorf("%w: %s: after a restart it describes the layout %s, before %s", ErrLayout, p.what(), formatLayout(ans.Layout), formatLayout(p.layout))
	}
	return nil
}

// killLocked ends the process group and forgets the process.
func (p *Process) killLocked() {
	if p.cmd == nil {
		return
	}
	killProcessGroup(p.cmd)
	select {
	case <-p.waitErr:
	case <-time.After(5 * time.Second):
	}
	p.cmd = nil
	p.sent = nil
}

// exchangeLocked sends one request and reads its answer, killing the
// process if that takes longer than timeout. An answer with ok false is
// an ErrAdapter error with the adapter's message.
func (p *Process) exchangeLocked(h header, floats map[string][]float64, ints map[string][]int32, timeout time.Duration) (message, error) {
	var timedOut bool
	var tmu sync.Mutex
	cmd := p.cmd
	timer := time.AfterFunc(timeout, func() {
		tmu.Lock()
		timedOut = true
		tmu.Unlock()
		killProcessGroup(cmd)
	})
	werr := writeMessage(p.in, h, floats, ints)
	var ans message
	var rerr error
	if werr == nil {
		ans, rerr = readMessage(p.out)
	}
	timer.Stop()
	tmu.Lock()
	hung := timedOut
	tmu.Unlock()
	switch {
	case hung:
		return ans, fmt.Errorf("%w: %s: no answer to %q within %v; killed", ErrAdapter, p.what(), h.Op, timeout)
	case werr != nil || rerr != nil:
		err := werr
		if err == nil {
			err = rerr
		}
		if errors.Is(err, ErrProtocol) {
			return ans, fmt.Errorf("%s: answering %q: %w", p.what(), h.Op, err)
		}
		return ans, fmt.Errorf("%w: %s: %s%s", ErrAdapter, p.what(), p.exitLocked(h.Op, err), p.tail.quote())
	case ans.OK == nil:
		return ans, fmt.Errorf("%w: %s: the answer to %q has no \"ok\" field", ErrProtocol, p.what(), h.Op)
	case !*ans.OK:
		msg := ans.Error
		if msg == "" {
			msg = "no message"
		}
		return ans, fmt.Errorf("%w: %s: %q failed: %s", ErrAdapter, p.what(), h.Op, msg)
	}
	return ans, nil
}

// exitLocked describes why the pipe broke: the exit status if the
// process has ended.
func (p *Process) exitLocked(op string, err error) string {
	select {
	case werr := <-p.waitErr:
		p.waitErr <- werr
		if werr == nil {
			return fmt.Sprintf("exited (status 0) before answering %q", op)
		}
		return fmt.Sprintf("crashed before answering %q (%v)", op, werr)
	case <-time.After(2 * time.Second):
		return fmt.Sprintf("the pipe broke during %q: %v", op, err)
	}
}

// dataLocked makes sure the adapter holds data and returns its id.
func (p *Process) dataLocked(d model.Examples, timeout time.Duration) (string, error) {
	if d.Len() == 0 {
		return "", fmt.Errorf("%w: no rows", model.ErrShape)
	}
	if d.Features != p.opts.Features || len(d.X) != d.Len()*d.Features {
		return "", fmt.Errorf("%w: %d values for %d rows of %d features; the model takes %d", model.ErrShape, len(d.X), d.Len(), d.Features, p.opts.Features)
	}
	for k, s := range p.sent {
		if s.x == &d.X[0] && s.y == &d.Y[0] && s.rows == d.Len() && s.feat == d.Features {
			// Most recently used last.
			p.sent = append(append(p.sent[:k:k], p.sent[k+1:]...), s)
			return s.id, nil
		}
	}
	ys := make([]int32, d.Len())
	for i, y := range d.Y {
		if y < 0 || y >= p.opts.Classes {
			return "", fmt.Errorf("%w: row %d has label %d, the model has %d classes", model.ErrShape, i, y, p.opts.Classes)
		}
		ys[i] = int32(y)
	}
	if len(p.sent) >= keptData {
		old := p.sent[0]
		if _, err := p.exchangeLocked(header{Op: "forget", Data: old.id}, nil, nil, timeout); err != nil {
			return "", err
		}
		p.sent = p.sent[1:]
	}
	p.nextData++
	id := fmt.Sprintf("d%d", p.nextData)
	h := header{Op: "data", Data: id, Rows: d.Len(), Features: d.Features, Payload: []Array{
		{Name: "x", DType: "f64", Shape: []int{d.Len(), d.Features}},
		{Name: "y", DType: "i32", Shape: []int{d.Len()}},
	}}
	if _, err := p.exchangeLocked(h, map[string][]float64{"x": d.X}, map[string][]int32{"y": ys}, timeout); err != nil {
		return "", err
	}
	p.sent = append(p.sent, &sentData{id: id, x: &d.X[0], y: &d.Y[0], rows: d.Len(), feat: d.Features, keep: d})
	return id, nil
}

// retry runs f on a live process, and once more on a new one if it fails.
// f is called with p.io held.
func (p *Process) retry(what string, f func() error) error {
	p.io.Lock()
	defer p.io.Unlock()
	var first error
	for attempt := range 2 {
		err := func() error {
			if p.cmd == nil {
				p.restarts++
				if err := p.startLocked(); err != nil {
					return err
				}
			}
			return f()
		}()
		if err == nil {
			return nil
		}
		p.killLocked()
		if errors.Is(err, model.ErrShape) || errors.Is(err, model.ErrConfig) || p.closed {
			return err // the caller's data or config: a new process would not help
		}
		if attempt == 0 {
			first = err
			if errors.Is(err, ErrLayout) {
				return err
			}
			p.log.Warn("model adapter failed; restarting it once", "adapter", p.what(), "call", what, "err", err)
			continue
		}
		if err.Error() == first.Error() {
			return fmt.Errorf("%w (the same after one restart)", err)
		}
		return fmt.Errorf("%w (after one restart; the first attempt: %v)", err, first)
	}
	return first
}

// TrainResult is what one train call returned.
type TrainResult struct {
	Update  []float64
	Samples int
	Steps   int
	Loss    float64
}

// Train sends one training task: data, the global parameters, the
// hyper-parameters and the seed; the adapter trains from params and
// answers the update Δ. task names the task in errors.
func (p *Process) Train(task string, d model.Examples, params []float64, cfg model.TrainConfig, seed uint64, timeout time.Duration) (TrainResult, error) {
	if len(params) != p.NumParams() {
		return TrainResult{}, fmt.Errorf("%w: %d parameters, the model has %d", model.ErrParamLength, len(params), p.NumParams())
	}
	if timeout <= 0 {
		timeout = p.opts.CallTimeout
	}
	var res TrainResult
	err := p.retry("train "+task, func() error {
		id, err := p.dataLocked(d, timeout)
		if err != nil {
			return err
		}
		h := header{Op: "train", Task: task, Data: id, Seed: seed,
			Config:  &TrainConfig{Epochs: cfg.Epochs, BatchSize: cfg.BatchSize, LearningRate: cfg.LearningRate, Momentum: cfg.Momentum, WeightDecay: cfg.WeightDecay},
			Payload: []Array{{Name: "params", DType: "f64", Shape: []int{len(params)}}}}
		ans, err := p.exchangeLocked(h, map[string][]float64{"params": params}, nil, timeout)
		if err != nil {
			return err
		}
		u, ok := ans.floats["update"]
		switch {
		case !ok:
			return fmt.Errorf("%w: %s: the answer to train %s has no \"update\" array", ErrProtocol, p.what(), task)
		case len(u) != len(params):
			return fmt.Errorf("%w: %s: the update of task %s has %d values, the model %d", ErrProtocol, p.what(), task, len(u), len(params))
		case ans.Samples < 1:
			return fmt.Errorf("%w: %s: task %s trained on %d samples, want ≥ 1", ErrProtocol, p.what(), task, ans.Samples)
		}
		if i := firstNonFinite(u); i >= 0 {
			return fmt.Errorf("%w: %s: update value %d of task %s is %v", ErrProtocol, p.what(), i, task, u[i])
		}
		res = TrainResult{Update: u, Samples: ans.Samples, Steps: ans.Steps}
		if ans.Metrics != nil {
			res.Loss = ans.Metrics.Loss
		}
		return nil
	})
	return res, err
}

type evalCall struct {
	data      model.Examples
	params    []float64
	gradients bool
	out       model.Metrics
	grad      []float64
	err       error
	done      chan struct{}
}

// Evaluate returns the metrics (and, with gradients, the gradient of the
// mean loss) of each parameter vector on d, in one or more batched
// requests of at most MaxBatch vectors.
func (p *Process) Evaluate(d model.Examples, params [][]float64, gradients bool) ([]model.Metrics, [][]float64, error) {
	n := p.NumParams()
	for i, v := range params {
		if len(v) != n {
			return nil, nil, fmt.Errorf("%w: vector %d has %d parameters, the model %d", model.ErrParamLength, i, len(v), n)
		}
	}
	met := make([]model.Metrics, len(params))
	var grads [][]float64
	if gradients {
		grads = make([][]float64, len(params))
	}
	for lo := 0; lo < len(params); lo += p.opts.MaxBatch {
		hi := min(lo+p.opts.MaxBatch, len(params))
		calls := make([]*evalCall, hi-lo)
		for k := range calls {
			calls[k] = &evalCall{data: d, params: params[lo+k], gradients: gradients}
		}
		if err := p.evalBatch(calls); err != nil {
			return nil, nil, err
		}
		for k, c := range calls {
			met[lo+k] = c.out
			if gradients {
				grads[lo+k] = c.grad
			}
		}
	}
	return met, grads, nil
}

// enqueue adds one evaluation to the pending queue and waits for it: the
// first caller to find nobody sending becomes the sender and sends what is
// pending, in batches, until the queue is empty; callers arriving
// meanwhile ride along in the next batch. That turns the valuation's
// concurrent coalition evaluations into batched requests without changing
// the valuation.
func (p *Process) enqueue(c *evalCall) error {
	c.done = make(chan struct{})
	p.mu.Lock()
	p.pending = append(p.pending, c)
	if p.busy {
		p.mu.Unlock()
		<-c.done
		return c.err
	}
	p.busy = true
	for len(p.pending) > 0 {
		batch := p.takeBatchLocked()
		p.mu.Unlock()
		err := p.evalBatch(batch)
		for _, b := range batch {
			b.err = err
			if b != c {
				close(b.done)
			}
		}
		p.mu.Lock()
	}
	p.busy = false
	p.mu.Unlock()
	return c.err
}

// takeBatchLocked takes up to MaxBatch pending calls on the same data and
// with the same gradients flag as the first.
func (p *Process) takeBatchLocked() []*evalCall {
	first := p.pending[0]
	var batch, rest []*evalCall
	for _, c := range p.pending {
		same := len(batch) < p.opts.MaxBatch && c.gradients == first.gradients && c.data.Len() == first.data.Len() &&
			c.data.Features == first.data.Features && &c.data.X[0] == &first.data.X[0] && &c.data.Y[0] == &first.data.Y[0]
		if same {
			batch = append(batch, c)
		} else {
			rest = append(rest, c)
		}
	}
	p.pending = rest
	return batch
}

// evalBatch sends one evaluate request for calls (same data, ≤ MaxBatch).
func (p *Process) evalBatch(calls []*evalCall) error {
	d, n, b := calls[0].data, p.NumParams(), len(calls)
	flat := make([]float64, 0, b*n)
	for _, c := range calls {
		flat = append(flat, c.params...)
	}
	return p.retry("evaluate", func() error {
		id, err := p.dataLocked(d, p.opts.CallTimeout)
		if err != nil {
			return err
		}
		h := header{Op: "evaluate", Data: id, Count: b, Gradients: calls[0].gradients,
			Payload: []Array{{Name: "params", DType: "f64", Shape: []int{b, n}}}}
		ans, err := p.exchangeLocked(h, map[string][]float64{"params": flat}, nil, p.opts.CallTimeout)
		if err != nil {
			return err
		}
		if len(ans.Loss) != b || len(ans.Accuracy) != b {
			return fmt.Errorf("%w: %s: evaluate of %d vectors answered %d losses and %d accuracies", ErrProtocol, p.what(), b, len(ans.Loss), len(ans.Accuracy))
		}
		var g []float64
		if calls[0].gradients {
			g = ans.floats["gradients"]
			if len(g) != b*n {
				return fmt.Errorf("%w: %s: evaluate of %d vectors of %d parameters answered %d gradient values", ErrProtocol, p.what(), b, n, len(g))
			}
			if i := firstNonFinite(g); i >= 0 {
				return fmt.Errorf("%w: %s: gradient value %d of vector %d is %v", ErrProtocol, p.what(), i%n, i/n, g[i])
			}
		}
		for k, c := range calls {
			l, a := ans.Loss[k], ans.Accuracy[k]
			if math.IsNaN(l) || math.IsInf(l, 0) || !(a >= 0 && a <= 1) {
				return fmt.Errorf("%w: %s: vector %d of the batch has loss %v and accuracy %v", ErrProtocol, p.what(), k, l, a)
			}
			c.out = model.Metrics{Loss: l, Accuracy: a}
			if g != nil {
				c.grad = g[k*n : (k+1)*n : (k+1)*n]
			}
		}
		return nil
	})
}

// checkLayout checks that a layout names each tensor once, with positive
// dimensions, and that its sizes add up to n.
func checkLayout(layout []Tensor, n int) error {
	if len(layout) == 0 {
		return errors.New("hello describes no layout")
	}
	seen := map[string]bool{}
	total := 0
	for i, t := range layout {
		if t.Name == "" || seen[t.Name] {
			return fmt.Errorf("layout tensor %d has an empty or repeated name %q", i, t.Name)
		}
		seen[t.Name] = true
		size := 1
		for _, d := range t.Shape {
			if d < 1 {
				return fmt.Errorf("layout tensor %s has shape %v", t.Name, t.Shape)
			}
			size *= d
		}
		total += size
	}
	if total != n || n < 1 {
		return fmt.Errorf("the layout %s holds %d values, num_params says %d", formatLayout(layout), total, n)
	}
	return nil
}

func sameLayout(a, b []Tensor) bool {
	return slices.EqualFunc(a, b, func(x, y Tensor) bool { return x.Name == y.Name && slices.Equal(x.Shape, y.Shape) })
}

func formatLayout(l []Tensor) string {
	parts := make([]string, len(l))
	for i, t := range l {
		parts[i] = fmt.Sprintf("%s%v", t.Name, t.Shape)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func firstNonFinite(v []float64) int {
	for i, x := range v {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return i
		}
	}
	return -1
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

// quote returns the last lines of stderr, for an error message.
func (t *tailBuffer) quote() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.TrimSpace(string(bytes.ToValidUTF8(t.b, nil)))
	if s == "" {
		return ""
	}
	lines := strings.Split(s, "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return "; its stderr ends: " + strings.Join(lines, " | ")
}
