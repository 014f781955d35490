package experiments

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/model"
)

// Sentinel errors of the package.
var (
	ErrScenario = errors.New("experiments: invalid scenario")
	ErrMethod   = errors.New("experiments: invalid method")
	ErrMode     = errors.New("experiments: invalid mode")
)

// Scenario is one experiment as written in a YAML file under
// experiments/scenarios/: a dataset dealt to clients, corrupted as the
// literature's scenarios say, trained for a number of FedAvg rounds, repeated
// over seeds.
type Scenario struct {
	// Name identifies the scenario in every output; it defaults to the file
	// name without extension.
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	// Dataset is an embedded dataset: breast-cancer, digits or wsn.
	Dataset string `yaml:"dataset"`
	// MaxRows, if positive, keeps a stratified subsample of that many rows
	// (wsn has 18,914 rows; every utility evaluation scans the validation
	// set, so the experiments use a slice of it).
	MaxRows int        `yaml:"max_rows"`
	Model   model.Spec `yaml:"model"`
	Clients int        `yaml:"clients"`
	// Partition deals the training rows: iid, dirichlet (alpha) or
	// size-skew (sizes).
	Partition dataset.PartitionSpec `yaml:"partition"`
	ValFrac   float64               `yaml:"val_frac"`
	TestFrac  float64               `yaml:"test_frac"`
	// Corruptions maps a client index to its corruption in the text form of
	// dataset.Corruption ("label-flip:0.2", "feature-noise:0.5",
	// "duplicate:0", "free-rider:zero|random|echo"). Feature noise is in
	// standard deviations: the whole dataset is standardised first.
	Corruptions map[int]dataset.Corruption `yaml:"corruptions"`
	// RetrainCopies makes a duplicate train on its original's rows with its
	// own shuffles, as a copy run by another process does (tally simulate's
	// duplicate), instead of with its original's, which makes its update
	// bit-identical.
	RetrainCopies bool `yaml:"retrain_copies"`
	// Sybil, if set, runs the scenario a second time with client Client's
	// data split into Parts clients, to measure the Sybil's gain.
	Sybil *SybilSpec        `yaml:"sybil"`
	Train model.TrainConfig `yaml:"train"`
	// Rounds of FedAvg, every one valued.
	Rounds int `yaml:"rounds"`
	// Seeds are the repeats; --repeats R takes the first R (and extends
	// the list with consecutive seeds if it is shorter).
	Seeds []uint64 `yaml:"seeds"`
	// Utility scores a coalition's model: loss (−validation loss, the
	// default) or accuracy.
	Utility string `yaml:"utility"`
	// GroupSize is k of the groups mode (default 3, the coordinator's, or
	// ⌊clients/2⌋ if that is smaller, so that there are two groups).
	GroupSize int `yaml:"group_size"`
	// Reference is the ground truth: exact (exact Shapley in plain mode, the
	// default up to 14 clients) or monte-carlo with ReferenceSamples
	// permutations per round (default above).
	Reference        string `yaml:"reference"`
	ReferenceSamples int    `yaml:"reference_samples"`
	// Methods, if set, replaces the runner's default method list for this
	// scenario (a command-line --methods still wins).
	Methods []string `yaml:"methods"`
}

// SybilSpec splits one client's data among several identities.
type SybilSpec struct {
	Client int `yaml:"client"`
	Parts  int `yaml:"parts"`
}

// Reference kinds.
const (
	ReferenceExact      = "exact"
	ReferenceMonteCarlo = "monte-carlo"
)

// exactReferenceBound is the largest federation valued exactly as ground
// truth: 2^14 utilities a round is about 1 s for logistic regression on
// breast-cancer (≈60 µs an evaluation), more than that is not affordable
// across rounds, seeds and modes on a 2-core machine.
const exactReferenceBound = 14

// defaultReferenceSamples permutations per round give each reference value
// a standard error of about 1/√1000 ≈ 3% of the spread of its marginals.
const defaultReferenceSamples = 1000

// LoadScenario reads a scenario file and returns it validated with its
// defaults filled in.
func LoadScenario(path string) (Scenario, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Scenario{}, err
	}
	return ParseScenario(path, b)
}

// ParseScenario reads a scenario from b, as LoadScenario reads the file
// path (which names it and its errors), and returns it validated with its
// defaults filled in.
func ParseScenario(path string, b []byte) (Scenario, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var s Scenario
	if err := dec.Decode(&s); err != nil {
		return Scenario{}, fmt.Errorf("%w: %s: %v", ErrScenario, path, err)
	}
	if s.Name == "" {
		s.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	s = s.WithDefaults()
	if err := s.Validate(); err != nil {
		return Scenario{}, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// WithDefaults fills the blanks of s.
func (s Scenario) WithDefaults() Scenario {
	if s.Model.Kind == "" {
		s.Model.Kind = model.KindLogReg
	}
	s.Model = s.Model.WithDefaults()
	if s.Partition.Kind == "" {
		s.Partition.Kind = dataset.PartitionIID
	}
	if s.ValFrac == 0 {
		s.ValFrac = 0.2
	}
	if s.TestFrac == 0 {
		s.TestFrac = 0.2
	}
	if s.Train == (model.TrainConfig{}) {
		s.Train = model.TrainConfig{Epochs: 2, BatchSize: 16, LearningRate: 0.1, Momentum: 0.9}
	}
	if s.Rounds == 0 {
		s.Rounds = 10
	}
	if len(s.Seeds) == 0 {
		s.Seeds = []uint64{1, 2, 3}
	}
	if s.Utility == "" {
		s.Utility = "loss"
	}
	if s.GroupSize == 0 {
		// The coordinator's default k = 3, but never fewer than two groups:
		// a one-group round gives every client its weight share whatever the
		// method, which measures nothing.
		s.GroupSize = max(2, min(3, s.Clients/2))
	}
	players := s.Clients
	if s.Sybil != nil {
		players += s.Sybil.Parts - 1
	}
	if s.Reference == "" {
		s.Reference = ReferenceExact
		if players > exactReferenceBound {
			s.Reference = ReferenceMonteCarlo
		}
	}
	if s.Reference == ReferenceMonteCarlo && s.ReferenceSamples == 0 {
		s.ReferenceSamples = defaultReferenceSamples
	}
	return s
}

// Validate reports every problem of s at once, each wrapping ErrScenario.
func (s Scenario) Validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrScenario, field, fmt.Sprintf(format, a...)))
	}
	if !slices.Contains(dataset.EmbeddedNames(), s.Dataset) {
		bad("dataset", "must be one of %v, got %q", dataset.EmbeddedNames(), s.Dataset)
	}
	if err := s.Model.Validate(); err != nil {
		bad("model", "%v", err)
	}
	if s.Clients < 2 || s.Clients > 63 {
		bad("clients", "must be in [2, 63], got %d", s.Clients)
	}
	if err := s.Partition.Validate(); err != nil {
		bad("partition", "%v", err)
	}
	for i, c := range s.Corruptions {
		if i < 0 || i >= s.Clients {
			bad("corruptions", "client %d does not exist (clients are 0..%d)", i, s.Clients-1)
		}
		if c.Kind == dataset.CorruptDuplicate && (c.Of < 0 || c.Of >= s.Clients || c.Of == i) {
			bad("corruptions", "client %d duplicates client %d, which must be another client", i, c.Of)
		}
	}
	if sy := s.Sybil; sy != nil {
		if sy.Client < 0 || sy.Client >= s.Clients {
			bad("sybil.client", "client %d does not exist", sy.Client)
		}
		if sy.Parts < 2 {
			bad("sybil.parts", "must be ≥ 2, got %d", sy.Parts)
		}
		if _, ok := s.Corruptions[sy.Client]; ok {
			bad("sybil.client", "client %d is also corrupted; the Sybil must be an honest client", sy.Client)
		}
		if s.Clients+sy.Parts-1 > 63 {
			bad("sybil.parts", "%d clients after the split, more than 63", s.Clients+sy.Parts-1)
		}
	}
	if err := s.Train.Validate(); err != nil {
		bad("train", "%v", err)
	}
	if s.Rounds < 1 {
		bad("rounds", "must be ≥ 1, got %d", s.Rounds)
	}
	switch s.Utility {
	case "loss", "accuracy":
	default:
		bad("utility", "must be loss or accuracy, got %q", s.Utility)
	}
	if s.GroupSize < 2 || s.GroupSize > s.Clients {
		bad("group_size", "must be in [2, clients], got %d", s.GroupSize)
	}
	switch s.Reference {
	case ReferenceExact:
		players := s.Clients
		if s.Sybil != nil {
			players += s.Sybil.Parts - 1
		}
		if players > exactReferenceBound {
			bad("reference", "exact ground truth is refused above %d players (this scenario has %d); use monte-carlo", exactReferenceBound, players)
		}
	case ReferenceMonteCarlo:
		if s.ReferenceSamples < 10 {
			bad("reference_samples", "must be ≥ 10, got %d", s.ReferenceSamples)
		}
	default:
		bad("reference", "must be exact or monte-carlo, got %q", s.Reference)
	}
	for _, m := range s.Methods {
		if _, err := ParseMethod(m); err != nil {
			bad("methods", "%v", err)
		}
	}
	if s.MaxRows < 0 {
		bad("max_rows", "must be ≥ 0, got %d", s.MaxRows)
	}
	return errors.Join(errs...)
}
