package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"

	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/model"
)

// KindCNN is the model name of the bring-your-own-model CNN
// (examples/pytorch/digits_cnn.py) in Config.Models.
const KindCNN = "cnn"

// ErrNoCNN is returned when Config.Models asks for the CNN and
// Config.CNN is nil: its releases and attacks need PyTorch.
var ErrNoCNN = errors.New("audit: the cnn model needs a CNN attacker (PyTorch)")

// CNNAttacker makes the CNN's releases and attacks them, in a process
// that has the CNN's gradients. Attack answers one request; it is called
// once per Run, from one goroutine. The answer must be a function of the
// request alone, so that Run stays deterministic in Config.Seed.
type CNNAttacker interface {
	AttackCNN(CNNRequest) (CNNResponse, error)
}

// CNNRequest is what the Go side decides: every row, seed and release.
// Rows are raw pixels (0 to 16): the CNN divides them by 16 itself and its
// job has no feature scaling.
type CNNRequest struct {
	Train      cnnTrain   `json:"train"`
	Classes    int        `json:"classes"`
	MatchIters int        `json:"match_iters"`
	MatchLR    float64    `json:"match_lr"`
	Val        cnnRows    `json:"val"`  // the attacker's own rows
	Test       cnnRows    `json:"test"` // the non-members
	Trials     []cnnTrial `json:"trials"`
}

type cnnTrain struct {
	Epochs       int     `json:"epochs"`
	BatchSize    int     `json:"batch_size"`
	LearningRate float64 `json:"learning_rate"`
	Momentum     float64 `json:"momentum"`
	WeightDecay  float64 `json:"weight_decay"`
}

type cnnRows struct {
	X [][]float64 `json:"x"`
	Y []int       `json:"y"`
}

type cnnTrial struct {
	InitSeed uint64       `json:"init_seed"` // torch.manual_seed of the initial model
	Clients  []cnnClient  `json:"clients"`
	Releases []cnnRelease `json:"releases"`
}

type cnnClient struct {
	cnnRows
	Seed uint64 `json:"seed"` // the local training's shuffling
}

type cnnRelease struct {
	Members    []int  `json:"members"`    // indices into the trial's clients
	NonMembers []int  `json:"nonmembers"` // indices into Test
	MatchSeed  uint64 `json:"match_seed"`
}

// CNNResponse is the attacks' output, per trial and release, in request
// order.
type CNNResponse struct {
	Trials []struct {
		Releases []struct {
			Labels     []int       `json:"labels"`     // inferred label counts
			Candidates [][]float64 `json:"candidates"` // reconstructions, raw pixels
			Members    []float64   `json:"members"`    // membership scores of the release's rows
			NonMembers []float64   `json:"nonmembers"` // and of the non-members asked for
		} `json:"releases"`
	} `json:"trials"`
}

// PythonCNN runs audit/cnn_attack.py with Python: the CNN and its local
// training are examples/pytorch/digits_cnn.py's, the attacks use torch
// autograd.
type PythonCNN struct {
	// Python is the interpreter (extmodel.FindPython("torch", "numpy")).
	Python string
	// Script is the path of cnn_attack.py; empty: the one beside this
	// file in the source tree.
	Script string
}

// CNNScript is the path of audit/cnn_attack.py in the source tree this
// package was built from.
func CNNScript() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "cnn_attack.py")
}

// AttackCNN implements CNNAttacker.
func (p PythonCNN) AttackCNN(req CNNRequest) (CNNResponse, error) {
	script := p.Script
	if script == "" {
		script = CNNScript()
	}
	in, err := json.Marshal(req)
	if err != nil {
		return CNNResponse{}, err
	}
	cmd := exec.Command(p.Python, script)
	cmd.Stdin = bytes.NewReader(in)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return CNNResponse{}, fmt.Errorf("audit: %s %s: %w: %s", p.Python, script, err, lastLines(stderr.String(), 5))
	}
	var resp CNNResponse
	if err := json.Unmarshal(out.Bytes(), &resp); err != nil {
		return CNNResponse{}, fmt.Errorf("audit: %s: its answer is not JSON: %w", script, err)
	}
	return resp, nil
}

func lastLines(s string, n int) string {
	lines := bytes.Split(bytes.TrimSpace([]byte(s)), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// cnnMatchLR is gradient matching's Adam step in pixels for the CNN,
// whose dummies live in raw pixels: matchLR (0.05 standard deviations) of
// the built-in models times about 5, the spread of a digit's pixel.
const cnnMatchLR = 0.25

// cnnEnv is an env over raw pixels: the identity scaler, so that the
// scoring of the built-in models (bestImages, unscale) applies unchanged.
func newCNNEnv(cfg Config) (*env, error) {
	ds, err := dataset.Embedded("digits")
	if err != nil {
		return nil, err
	}
	train, val, test, err := dataset.Split(ds.Examples, 0.2, 0.2, cfg.Seed)
	if err != nil {
		return nil, err
	}
	f := ds.Examples.Features
	id := dataset.Scaler{Mean: make([]float64, f), Std: slices.Repeat([]float64{1}, f)}
	e := &env{
		cfg: cfg, data: "digits", spec: model.Spec{Kind: KindCNN}, classes: ds.Classes(),
		image: true, lo: 0, hi: 16, side: 8,
		scaler: id, train: train, val: val, test: test, valRaw: val,
	}
	e.prior = labelCounts(val.Y, e.classes)
	e.meanImage = meanRow(rowsOf(val))
	return e, nil
}

func rowsOf(e model.Examples) [][]float64 {
	out := make([][]float64, e.Len())
	for i := range out {
		out[i] = e.Row(i)
	}
	return out
}

func toCNNRows(e model.Examples) cnnRows {
	return cnnRows{X: rowsOf(e), Y: slices.Clone(e.Y)}
}

// cnn attacks the small-client releases of the CNN: one client's
// plaintext update of one row and of SmallRows rows, and sums of k such
// updates, each trial from a fresh initial model, with the rows, seeds and
// guesses of the built-in models' small() (the same trial draws the same
// rows). The group sums, the DP releases and the job-sized federation are
// not run for the CNN.
func (e *env) cnn(att CNNAttacker) ([]Row, []Picture, error) {
	cfg := e.cfg
	n := cfg.SmallRows
	maxK := max(slices.Max(cfg.Ks), cfg.Clients)
	if e.train.Len() < maxK*n+1 {
		return nil, nil, fmt.Errorf("%d training rows cannot give %d clients %d rows each", e.train.Len(), maxK, n)
	}
	names := []string{"plaintext update, 1 row", fmt.Sprintf("plaintext update, %d rows", n)}
	ks := []int{1, 1}
	rels := [][]int{{maxK}, {0}}
	for _, k := range cfg.Ks {
		names = append(names, fmt.Sprintf("sum of %d updates (he)", k))
		ks = append(ks, k)
		rels = append(rels, seq(0, k))
	}
	req := CNNRequest{
		Train: cnnTrain{Epochs: cfg.Train.Epochs, BatchSize: cfg.Train.BatchSize, LearningRate: cfg.Train.LearningRate,
			Momentum: cfg.Train.Momentum, WeightDecay: cfg.Train.WeightDecay},
		Classes: e.classes, MatchIters: cfg.MatchIters, MatchLR: cnnMatchLR,
		Val: toCNNRows(e.val), Test: toCNNRows(e.test),
	}
	data := make([][]model.Examples, cfg.Trials)
	truths := make([][]model.Examples, cfg.Trials)
	for t := range cfg.Trials {
		perm := derive(cfg.Seed, "rows", t, 0).Perm(e.train.Len())
		tr := cnnTrial{InitSeed: cfg.Seed + uint64(t)*7919}
		data[t] = make([]model.Examples, maxK+1)
		for c := range data[t] {
			idx := perm[c*n : (c+1)*n]
			if c == maxK {
				idx = perm[c*n : c*n+1] // the one-row client
			}
			data[t][c] = e.train.Subset(idx)
			// torch seeds are signed 64-bit.
			seed := derive(cfg.Seed, "train", t, c).Uint64() >> 1
			tr.Clients = append(tr.Clients, cnnClient{cnnRows: toCNNRows(data[t][c]), Seed: seed})
		}
		for i, members := range rels {
			truth := model.Examples{Features: e.train.Features}
			for _, c := range members {
				truth.X = append(truth.X, data[t][c].X...)
				truth.Y = append(truth.Y, data[t][c].Y...)
			}
			truths[t] = append(truths[t], truth)
			tr.Releases = append(tr.Releases, cnnRelease{Members: members, NonMembers: e.labelMatched(truth.Y),
				MatchSeed: derive(cfg.Seed, "cnnmatch", t, i).Uint64() >> 1})
		}
		req.Trials = append(req.Trials, tr)
	}
	resp, err := att.AttackCNN(req)
	if err != nil {
		return nil, nil, err
	}
	if len(resp.Trials) != cfg.Trials {
		return nil, nil, fmt.Errorf("audit: the CNN attacker answered %d trials, %d asked", len(resp.Trials), cfg.Trials)
	}
	all := make([][]score, len(names))
	rows := make([]float64, len(names))
	var pics []Picture
	for t, tr := range resp.Trials {
		if len(tr.Releases) != len(rels) {
			return nil, nil, fmt.Errorf("audit: the CNN attacker answered %d releases in trial %d, %d asked", len(tr.Releases), t, len(rels))
		}
		rng := derive(cfg.Seed, "guess", t, 0)
		for i, r := range tr.Releases {
			truth := truths[t][i]
			if len(r.Labels) != e.classes || len(r.Members) != truth.Len() || len(r.NonMembers) != len(req.Trials[t].Releases[i].NonMembers) {
				return nil, nil, fmt.Errorf("audit: the CNN attacker's answer to trial %d, release %d has %d label counts (want %d), %d member scores (want %d), %d non-member scores (want %d)",
					t, i, len(r.Labels), e.classes, len(r.Members), truth.Len(), len(r.NonMembers), len(req.Trials[t].Releases[i].NonMembers))
			}
			for _, c := range r.Candidates {
				if len(c) != e.train.Features {
					return nil, nil, fmt.Errorf("audit: the CNN attacker's candidate in trial %d, release %d has %d pixels, want %d", t, i, len(c), e.train.Features)
				}
			}
			var s score
			guesses := make([][]float64, max(len(r.Candidates), 1))
			for g := range guesses {
				guesses[g] = e.valRaw.Row(rng.IntN(e.valRaw.Len()))
			}
			pix := make([][]float64, len(r.Candidates))
			for c, x := range r.Candidates {
				pix[c] = e.unscale(x) // the identity, clipped to 0..16
			}
			s.psnr, s.ssim, s.originals, s.recons = e.bestImages(truth, pix)
			s.psnrG, s.ssimG, _, _ = e.bestImages(truth, guesses)
			want := counts(truth.Y, e.classes)
			s.label = labelOverlap(r.Labels, want)
			s.labelG = labelOverlap(countsFromShares(e.prior, truth.Len()), want)
			s.auc = AUC(r.Members, r.NonMembers)
			all[i] = append(all[i], s)
			rows[i] += float64(truth.Len()) / float64(cfg.Trials)
			if t == 0 && (i == 1 || i == len(rels)-1) {
				pics = append(pics, e.picture(names[i], ks[i], s))
			}
		}
	}
	out := make([]Row, len(names))
	for i := range names {
		out[i] = e.row(names[i], ks[i], rows[i], all[i])
	}
	return out, pics, nil
}
