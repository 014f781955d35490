package audit

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/model"
)

// ErrConfig marks an invalid Config; each problem is reported at once,
// naming its field.
var ErrConfig = errors.New("audit: invalid config")

// Config is the job the audit plays the coordinator of, and the size of
// the audit. It is a literal; New fills the defaults and validates it.
type Config struct {
	// Datasets are embedded dataset names; default digits and
	// breast-cancer.
	Datasets []string
	// Models are model kinds; default logreg and mlp. KindCNN adds the
	// bring-your-own-model CNN of examples/pytorch/digits_cnn.py on
	// digits (the CNN reads 8×8 images; it is not run on breast-cancer),
	// attacked by CNN.
	Models []string
	// CNN makes and attacks the CNN's releases; required with KindCNN.
	CNN CNNAttacker
	// Hidden and Activation are the MLP's; defaults as in model.Spec.
	Hidden     []int
	Activation string
	// Train is the clients' local training, default tally simulate's:
	// 2 epochs, batch 16, learning rate 0.1, momentum 0.9.
	Train model.TrainConfig
	// Seed derives every random choice of the audit.
	Seed uint64
	// Trials repeats the small-client releases with fresh rows and a
	// fresh initial model; default 5.
	Trials int
	// SmallRows is the rows each client holds in the small-client
	// releases (the "small batch" of the baseline); default 8.
	SmallRows int
	// Ks are the numbers of updates summed; default 2, 3, 5, 10.
	Ks []int
	// GroupK is the least group size of the groups mode; default 3.
	GroupK int
	// Clients, Rounds and Alpha describe the job-sized federation
	// (a Dirichlet(Alpha) label skew, every client in every round);
	// default 10 clients, 20 rounds, alpha 0.5.
	Clients int
	Rounds  int
	Alpha   float64
	// MatchIters is the number of Adam steps of gradient matching
	// (gradmatch.go); default 600, and -1 turns the attack off.
	MatchIters int
	// DPEpsilons are the per-client budgets, at DPDelta over Rounds
	// rounds, of the differentially private releases (dp.go); default
	// 1, 4, 8 at δ = 1e-5.
	DPEpsilons []float64
	DPDelta    float64
}

func (c Config) withDefaults() Config {
	out := c
	if len(out.Datasets) == 0 {
		out.Datasets = []string{"digits", "breast-cancer"}
	}
	if len(out.Models) == 0 {
		out.Models = []string{model.KindLogReg, model.KindMLP}
	}
	if out.Train == (model.TrainConfig{}) {
		out.Train = model.TrainConfig{Epochs: 2, BatchSize: 16, LearningRate: 0.1, Momentum: 0.9}
	}
	if out.Trials == 0 {
		out.Trials = 5
	}
	if out.SmallRows == 0 {
		out.SmallRows = 8
	}
	if len(out.Ks) == 0 {
		out.Ks = []int{2, 3, 5, 10}
	}
	if out.GroupK == 0 {
		out.GroupK = 3
	}
	if out.Clients == 0 {
		out.Clients = 10
	}
	if out.Rounds == 0 {
		out.Rounds = 20
	}
	if out.Alpha == 0 {
		out.Alpha = 0.5
	}
	if len(out.DPEpsilons) == 0 {
		out.DPEpsilons = []float64{1, 4, 8}
	}
	if out.DPDelta == 0 {
		out.DPDelta = 1e-5
	}
	switch out.MatchIters {
	case 0:
		out.MatchIters = 600
	case -1:
		out.MatchIters = 0
	}
	return out
}

// validate reports every problem of a defaulted config at once.
func (c Config) validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrConfig, field, fmt.Sprintf(format, args...)))
	}
	for i, d := range c.Datasets {
		if d != "digits" && d != "breast-cancer" {
			bad(fmt.Sprintf("datasets[%d]", i), "want digits or breast-cancer (the image and the tabular sample), got %q", d)
		}
	}
	for i, m := range c.Models {
		switch m {
		case model.KindLogReg, model.KindMLP:
		case KindCNN:
			if c.CNN == nil {
				errs = append(errs, fmt.Errorf("%w: models[%d]: %w", ErrConfig, i, ErrNoCNN))
			}
			if !slices.Contains(c.Datasets, "digits") {
				bad(fmt.Sprintf("models[%d]", i), "%q reads 8×8 images: it needs the digits dataset, datasets are %v", m, c.Datasets)
			}
		default:
			bad(fmt.Sprintf("models[%d]", i), "want %q, %q or %q, got %q", model.KindLogReg, model.KindMLP, KindCNN, m)
		}
	}
	if slices.Contains(c.Models, model.KindMLP) {
		spec := model.Spec{Kind: model.KindMLP, Hidden: c.Hidden, Activation: c.Activation}.WithDefaults()
		if err := spec.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%w: %w", ErrConfig, err))
		}
	}
	if err := c.Train.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("%w: train: %w", ErrConfig, err))
	}
	if c.Trials < 1 {
		bad("trials", "must be ≥ 1, got %d", c.Trials)
	}
	if c.SmallRows < 1 {
		bad("small_rows", "must be ≥ 1, got %d", c.SmallRows)
	}
	for i, k := range c.Ks {
		if k < 2 {
			bad(fmt.Sprintf("ks[%d]", i), "a sum needs ≥ 2 updates, got %d", k)
		}
	}
	if c.GroupK < 2 {
		bad("group_k", "must be ≥ 2, got %d", c.GroupK)
	}
	if c.Clients < 2 || c.Clients < c.GroupK {
		bad("clients", "must be ≥ 2 and ≥ group_k = %d, got %d", c.GroupK, c.Clients)
	}
	if c.Rounds < 1 {
		bad("rounds", "must be ≥ 1, got %d", c.Rounds)
	}
	if c.MatchIters < 0 {
		bad("match_iters", "must be ≥ 0 (or −1 before defaults), got %d", c.MatchIters)
	}
	for i, eps := range c.DPEpsilons {
		if !(eps > 0) || math.IsInf(eps, 0) {
			bad(fmt.Sprintf("dp_epsilons[%d]", i), "must be finite and > 0, got %v", eps)
		}
	}
	if !(c.DPDelta > 0 && c.DPDelta < 1) {
		bad("dp_delta", "must be in (0, 1), got %v", c.DPDelta)
	}
	if !(c.Alpha > 0) {
		bad("alpha", "must be > 0, got %v", c.Alpha)
	}
	return errors.Join(errs...)
}

// env is one (dataset, model) pair of the audit: the data split and
// scaled as the job would, and the attacker's own rows.
type env struct {
	cfg       Config
	data      string
	spec      model.Spec
	arch      arch
	classes   int
	image     bool
	lo, hi    float64 // range of a raw feature of an image (digits: 0..16)
	side      int     // an image's side (digits: 8)
	scaler    dataset.Scaler
	train     model.Examples // scaled rows the clients are drawn from
	val, test model.Examples // scaled: the coordinator's validation rows, and non-members
	valRaw    model.Examples // the attacker's validation rows unscaled, for its guesses
	prior     []float64      // label shares of the validation rows
	meanImage []float64      // the mean validation image: the constant guess
}

func modelSpecMLP(c Config) model.Spec {
	return model.Spec{Kind: model.KindMLP, Hidden: c.Hidden, Activation: c.Activation}.WithDefaults()
}
