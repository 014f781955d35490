package engine

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/manifest"
	"github.com/tallyfl/tally/model"
)

// ErrConfig is wrapped by every job-file problem.
var ErrConfig = errors.New("coordinator: invalid job config")

// Duration is a time.Duration that reads "30s" or "2m" from YAML.
type Duration time.Duration

// UnmarshalYAML accepts a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: expected a duration such as \"30s\", got %q", n.Line, n.Value)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: expected a duration such as \"30s\", got %q", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// JobConfig is the job file as written by the ML team. It is a literal:
// NewJob fills the defaults and validates it.
type JobConfig struct {
	// ID names the job in logs, receipts and the store.
	ID string `yaml:"id"`
	// Seed fixes client sampling, partitions, Monte Carlo permutations and initial weights.
	Seed uint64 `yaml:"seed"`
	// Rounds is the number of rounds that must complete.
	Rounds int               `yaml:"rounds"`
	Model  model.Spec        `yaml:"model"`
	Train  model.TrainConfig `yaml:"train"`
	Data   DataConfig        `yaml:"data"`
	// Clients says who may join and how many take part in a round.
	Clients ClientsConfig `yaml:"clients"`
	// RoundTimeout closes a round with the updates received so far.
	RoundTimeout Duration `yaml:"round_timeout"`
	// Tick is the driver's clock step; deadlines are counted in ticks.
	Tick Duration `yaml:"tick"`
	// OnRoundFailure is "retry" (start the round again, up to
	// MaxFailedRounds consecutive failures) or "stop".
	OnRoundFailure  string        `yaml:"on_round_failure"`
	MaxFailedRounds int           `yaml:"max_failed_rounds"`
	Scaling         ScalingConfig `yaml:"scaling"`
	// Listen is the coordinator's gRPC address.
	Listen string `yaml:"listen"`
	// SecureAggregation is "he" (multiparty CKKS: the coordinator sees
	// only aggregates, the default) or "none" (updates in the clear).
	SecureAggregation string `yaml:"secure_aggregation"`
	// Committee is the decryption committee under "he".
	Committee CommitteeConfig `yaml:"committee"`
	// MinGroupSize is k: no aggregate of fewer than k updates is decrypted.
	MinGroupSize int `yaml:"min_group_size"`
	// HEParams are the CKKS parameters; the default is aggregation.DefaultConfig.
	HEParams *aggregation.ParametersConfig `yaml:"he_params"`
	// Valuation scores each client's contribution every round.
	Valuation ValuationConfig `yaml:"valuation"`
	// Payment turns the scores into payouts and usage quotas.
	Payment PaymentConfig `yaml:"payment"`
	// Manifest names the job's signed manifest (tally manifest create),
	// resolved against the job file's folder; the coordinator refuses to
	// start when the job file contradicts it. Empty: no manifest.
	Manifest string `yaml:"manifest"`
	// ReceiptKey names the file holding the coordinator's receipt-signing
	// key (PEM, PKCS #8), whose public half is in the manifest; a state
	// file holding another key is refused. Empty: the state file's own key.
	ReceiptKey string `yaml:"receipt_key"`
	// TLSCert and TLSKey name the coordinator's TLS certificate and key
	// (PEM), which it serves unless run with --insecure-plaintext; with a
	// manifest, the certificate must be the one it pins.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// Privacy adds differential privacy to the clients' updates; off by
	// default, and absent from the identity of a job without it.
	Privacy PrivacyConfig `yaml:"privacy,omitempty"`
	// Edges are the edge aggregators (`tally edge`) the coordinator takes
	// partial aggregates from, each named and with the Ed25519 public key
	// its calls are signed with; absent from a job without edges.
	Edges []EdgeConfig `yaml:"edges,omitempty"`
}

// EdgeConfig names one edge aggregator of a job.
type EdgeConfig struct {
	ID string `yaml:"id"`
	// PublicKey is the edge's Ed25519 public key, hex.
	PublicKey string `yaml:"public_key"`
	// TLSCert, if set, names the certificate (PEM) the edge shows its
	// clients, which the job's manifest then pins for it (tally manifest
	// create, tally data); unset, the edge shows the coordinator's
	// certificate and holds its key. Operational: not in the job's
	// identity.
	TLSCert string `yaml:"tls_cert,omitempty"`
}

// CommitteeConfig sizes the decryption committee.
type CommitteeConfig struct {
	// Size c: members drawn from the enrolled clients with the job seed.
	Size int `yaml:"size"`
	// Threshold t: any t members decrypt; up to c − t may drop out.
	Threshold int `yaml:"threshold"`
	// Seed, if set, draws the committee by the job manifest's rule
	// (manifest.DrawCommittee over (seed, epoch, id)), which a client
	// recomputes, and only when at least Threshold candidates are present:
	// a client holding a manifest refuses a committee below the threshold.
	// The coordinator sets it from the manifest; a job file cannot.
	Seed []byte `yaml:"-"`
}

// DataConfig is the data schema every client must match, and the
// coordinator's own held-out data.
type DataConfig struct {
	Features int `yaml:"features"`
	// Classes is the number of classes. A job file gives it, or the class
	// names, as data.classes; NewJob sets it to len(ClassNames).
	Classes int `yaml:"-"`
	// ClassNames names the classes in label order: label k is class
	// ClassNames[k] in every client's file and the coordinator's. A job
	// file writes them as data.classes: [healthy, diabetic]; a number
	// there (classes: 2) names them "0", "1", …. Clients and the
	// coordinator map their label fields onto these names, never onto an
	// order of their own. NewJob fills them from Classes when absent.
	ClassNames ClassNames `yaml:"classes"`
	// Validation is evaluated after every round; Test once at the end.
	Validation SourceConfig `yaml:"validation"`
	Test       SourceConfig `yaml:"test"`
}

// maxClasses bounds data.classes: a job file's "classes: 4000000000"
// would otherwise allocate billions of class names. It is the bound the
// CSV loader puts on integer labels.
const maxClasses = 10000

// ClassNames are a job's class names in label order. In YAML they are a
// list of names, or a number n, which stands for "0" … "n-1" (and is
// written back as that number).
type ClassNames []string

// NumberedClasses returns the names "0" … "n-1".
func NumberedClasses(n int) ClassNames {
	names := make(ClassNames, n)
	for k := range names {
		names[k] = strconv.Itoa(k)
	}
	return names
}

// numbered reports whether the names are "0" … "n-1".
func (c ClassNames) numbered() bool {
	for k, s := range c {
		if s != strconv.Itoa(k) {
			return false
		}
	}
	return true
}

// UnmarshalYAML accepts a list of names or a number of classes.
func (c *ClassNames) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.SequenceNode:
		var names []string
		if err := n.Decode(&names); err != nil {
			return fmt.Errorf("line %d: data.classes: expected a list of class names such as [healthy, diabetic]: %v", n.Line, err)
		}
		*c = names
		return nil
	case yaml.ScalarNode:
		k, err := strconv.Atoi(n.Value)
		if err != nil || n.Tag != "!!int" {
			return fmt.Errorf("line %d: data.classes: expected a number of classes or a list of class names such as [healthy, diabetic], got %q", n.Line, n.Value)
		}
		if k < 2 || k > maxClasses {
			return fmt.Errorf("line %d: data.classes: expected between 2 and %d classes, got %d", n.Line, maxClasses, k)
		}
		*c = NumberedClasses(k)
		return nil
	}
	return fmt.Errorf("line %d: data.classes: expected a number of classes or a list of class names such as [healthy, diabetic]", n.Line)
}

// MarshalYAML writes numbered classes as their number, others as a list.
func (c ClassNames) MarshalYAML() (any, error) {
	if len(c) > 0 && c.numbered() {
		return len(c), nil
	}
	// In flow style, as a job file writes them: [healthy, diabetic].
	n := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
	for _, s := range c {
		var v yaml.Node
		if err := v.Encode(s); err != nil {
			return nil, err
		}
		n.Content = append(n.Content, &v)
	}
	return n, nil
}

// SourceConfig names a CSV file, resolved relative to the job file.
type SourceConfig struct {
	CSV   string `yaml:"csv"`
	Label string `yaml:"label"`
}

// ClientsConfig controls enrolment and selection.
type ClientsConfig struct {
	// Enrolment lists who may join, by client id, with optional tokens (see
	// EnrolmentConfig; tokens are better issued with CreateToken).
	Enrolment []EnrolmentConfig `yaml:"enrolment"`
	// Min is the minimum number of updates a round needs to complete.
	Min int `yaml:"min"`
	// WaitFor is how many clients must have joined before the first round;
	// after EnrolTimeout the job starts with at least Min.
	WaitFor      int      `yaml:"wait_for"`
	EnrolTimeout Duration `yaml:"enrol_timeout"`
	// Fraction of the available clients selected each round (at least Min).
	Fraction float64 `yaml:"fraction"`
	// Liveness: a client that has not polled for this long is unavailable.
	Liveness Duration `yaml:"liveness"`
}

// EnrolmentConfig names a client who may join, and optionally a token
// that enrols it. Tokens are better issued with `tally token create`,
// which keeps only their hash in the job's tokens file; a job file may
// instead give a token's SHA-256 (token_sha256), or, for development and
// simulations, the token itself.
type EnrolmentConfig struct {
	ID          string `yaml:"id"`
	Token       string `yaml:"token,omitempty"`
	TokenSHA256 string `yaml:"token_sha256,omitempty"`
	// Uses is how many enrolments the token admits (default 1).
	Uses int `yaml:"uses,omitempty"`
}

// ScalingConfig chooses feature standardisation.
type ScalingConfig struct {
	// Mode is "none", "fixed" (Mean and Std given here) or "federated"
	// (computed in a set-up step from the clients' counts, sums and sums of squares).
	Mode string    `yaml:"mode"`
	Mean []float64 `yaml:"mean"`
	Std  []float64 `yaml:"std"`
}

// Job is a validated, defaulted job configuration. Treat it as immutable.
type Job struct {
	JobConfig
	// Dir is the directory relative paths in the config resolve against.
	Dir string
	// Params are the validated CKKS parameters (with secure_aggregation: he).
	Params aggregation.Parameters
	// Pinned is the verified manifest JobConfig.Manifest names, loaded and
	// checked against the job by coordinator.LoadJob; nil without one.
	Pinned *manifest.Manifest
	// DP is the derived differential-privacy mechanism; nil without
	// privacy.dp.
	DP *DPMechanism
}

// Secure reports whether updates travel under multiparty CKKS.
func (j Job) Secure() bool { return j.SecureAggregation == "he" }

// Ticks converts a duration to a whole number of ticks, at least 1.
func (j Job) Ticks(d Duration) int {
	n := int(time.Duration(d) / time.Duration(j.Tick))
	if n < 1 {
		n = 1
	}
	return n
}

// NewJob fills defaults and validates cfg, reporting every problem at once.
func NewJob(cfg JobConfig, dir string) (Job, error) {
	c := cfg
	if c.ID == "" {
		c.ID = "job"
	}
	if c.Rounds == 0 {
		c.Rounds = 10
	}
	if c.Model.Kind == "" {
		c.Model.Kind = "logreg"
	}
	c.Model = c.Model.WithDefaults()
	if c.Train.Epochs == 0 {
		c.Train.Epochs = 1
	}
	if c.Train.BatchSize == 0 {
		c.Train.BatchSize = 32
	}
	if c.Train.LearningRate == 0 {
		c.Train.LearningRate = 0.05
	}
	if c.RoundTimeout == 0 {
		c.RoundTimeout = Duration(60 * time.Second)
	}
	if c.Tick == 0 {
		c.Tick = Duration(100 * time.Millisecond)
	}
	if c.OnRoundFailure == "" {
		c.OnRoundFailure = "retry"
	}
	if c.MaxFailedRounds == 0 {
		c.MaxFailedRounds = 3
	}
	if c.Scaling.Mode == "" {
		c.Scaling.Mode = "federated"
	}
	if c.Clients.Min == 0 {
		c.Clients.Min = 1
	}
	if c.Clients.WaitFor == 0 {
		c.Clients.WaitFor = max(c.Clients.Min, len(c.Clients.Enrolment))
	}
	if c.Clients.EnrolTimeout == 0 {
		c.Clients.EnrolTimeout = Duration(5 * time.Minute)
	}
	if c.Clients.Fraction == 0 {
		c.Clients.Fraction = 1
	}
	if c.Clients.Liveness == 0 {
		c.Clients.Liveness = Duration(30 * time.Second)
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:7070"
	}
	if c.SecureAggregation == "" {
		c.SecureAggregation = "he"
	}
	if c.MinGroupSize == 0 {
		c.MinGroupSize = 3
	}
	if c.Committee.Size == 0 {
		c.Committee.Size = min(5, len(c.Clients.Enrolment))
	}
	if c.Committee.Threshold == 0 {
		// A majority: up to c − t = ⌈c/2⌉ − 1 members may drop out, and
		// more than half of the committee must collude to decrypt alone.
		c.Committee.Threshold = c.Committee.Size/2 + 1
	}
	if c.HEParams == nil {
		d := aggregation.DefaultConfig()
		c.HEParams = &d
	}
	c.valuationDefaults()

	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrConfig, field, fmt.Sprintf(format, args...)))
	}
	if c.Rounds < 0 {
		bad("rounds", "must be ≥ 1, got %d", c.Rounds)
	}
	seenEdge := map[string]bool{}
	for i, e := range c.Edges {
		k, err := hex.DecodeString(e.PublicKey)
		switch {
		case e.ID == "" || seenEdge[e.ID]:
			bad(fmt.Sprintf("edges[%d].id", i), "must be set and unique, got %q", e.ID)
		case err != nil || len(k) != ed25519.PublicKeySize:
			bad(fmt.Sprintf("edges[%d].public_key", i), "must be a hex Ed25519 public key (64 hex digits)")
		}
		seenEdge[e.ID] = true
	}
	if err := c.Model.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("%w: %v", ErrConfig, err))
	}
	if c.Train.Epochs < 0 {
		bad("train.epochs", "must be ≥ 1, got %d", c.Train.Epochs)
	}
	if c.Train.BatchSize < 0 {
		bad("train.batch_size", "must be ≥ 1, got %d", c.Train.BatchSize)
	}
	if !(c.Train.LearningRate > 0) {
		bad("train.learning_rate", "must be > 0, got %g", c.Train.LearningRate)
	}
	if c.Train.Momentum < 0 || c.Train.Momentum >= 1 {
		bad("train.momentum", "must be in [0, 1), got %g", c.Train.Momentum)
	}
	if c.Train.WeightDecay < 0 {
		bad("train.weight_decay", "must be ≥ 0, got %g", c.Train.WeightDecay)
	}
	if c.Data.Features < 1 {
		bad("data.features", "must be ≥ 1, got %d", c.Data.Features)
	}
	c.validateClasses(bad)
	if c.Clients.Min < 1 {
		bad("clients.min", "must be ≥ 1, got %d", c.Clients.Min)
	}
	if c.Clients.WaitFor < c.Clients.Min {
		bad("clients.wait_for", "must be ≥ clients.min (%d), got %d", c.Clients.Min, c.Clients.WaitFor)
	}
	if len(c.Clients.Enrolment) == 0 {
		bad("clients.enrolment", "lists no client: nobody could join")
	}
	if n := len(c.Clients.Enrolment); n > 0 && c.Clients.Min > n {
		bad("clients.min", "is %d but only %d clients may enrol", c.Clients.Min, n)
	}
	ids, tokens := map[string]int{}, map[string]int{}
	for i, e := range c.Clients.Enrolment {
		f := fmt.Sprintf("clients.enrolment[%d]", i)
		if e.ID == "" {
			bad(f+".id", "is empty")
		} else if j, ok := ids[e.ID]; ok {
			bad(f+".id", "%q repeats clients.enrolment[%d]", e.ID, j)
		}
		tok := e.Token
		switch {
		case e.Token != "" && e.TokenSHA256 != "":
			bad(f, "gives both token and token_sha256; give one")
		case e.Token != "" && len(e.Token) < 8:
			bad(f+".token", "must be at least 8 characters")
		case e.TokenSHA256 != "" && !isHex(e.TokenSHA256, 64):
			bad(f+".token_sha256", "must be 64 hexadecimal digits (a SHA-256), got %d characters", len(e.TokenSHA256))
		case e.Token != "":
			tok = tokenHash(e.Token)
		case e.TokenSHA256 != "":
			tok = strings.ToLower(e.TokenSHA256)
		}
		if e.Uses < 0 {
			bad(f+".uses", "must be ≥ 1 (default 1), got %d", e.Uses)
		}
		if j, ok := tokens[tok]; ok && tok != "" {
			bad(f+".token", "repeats the token of clients.enrolment[%d]", j)
		}
		ids[e.ID] = i
		if tok != "" {
			tokens[tok] = i
		}
	}
	if !(c.Clients.Fraction > 0 && c.Clients.Fraction <= 1) {
		bad("clients.fraction", "must be in (0, 1], got %g", c.Clients.Fraction)
	}
	if c.RoundTimeout < 0 || c.Tick < 0 || (c.Tick > 0 && c.RoundTimeout < c.Tick) {
		bad("round_timeout", "must be at least one tick (%s), got %s", time.Duration(c.Tick), time.Duration(c.RoundTimeout))
	}
	switch c.OnRoundFailure {
	case "retry", "stop":
	default:
		bad("on_round_failure", "must be \"retry\" or \"stop\", got %q", c.OnRoundFailure)
	}
	if c.MaxFailedRounds < 0 {
		bad("max_failed_rounds", "must be ≥ 1, got %d", c.MaxFailedRounds)
	}
	switch c.Scaling.Mode {
	case "none", "federated":
		if len(c.Scaling.Mean)+len(c.Scaling.Std) > 0 {
			bad("scaling", "mean and std are only read with mode \"fixed\"")
		}
	case "fixed":
		if len(c.Scaling.Mean) != c.Data.Features {
			bad("scaling.mean", "needs %d values (data.features), got %d", c.Data.Features, len(c.Scaling.Mean))
		}
		if len(c.Scaling.Std) != c.Data.Features {
			bad("scaling.std", "needs %d values (data.features), got %d", c.Data.Features, len(c.Scaling.Std))
		}
		for i, s := range c.Scaling.Std {
			if !(s > 0) {
				bad(fmt.Sprintf("scaling.std[%d]", i), "must be > 0, got %g", s)
			}
		}
	default:
		bad("scaling.mode", "must be \"none\", \"fixed\" or \"federated\", got %q", c.Scaling.Mode)
	}
	c.validateValuation(bad)
	dp := c.validatePrivacy(bad)
	var params aggregation.Parameters
	switch c.SecureAggregation {
	case "none":
	case "he":
		n := len(c.Clients.Enrolment)
		if c.Committee.Threshold < 2 || c.Committee.Threshold > c.Committee.Size {
			bad("committee.threshold", "must be in [2, committee.size = %d], got %d", c.Committee.Size, c.Committee.Threshold)
		}
		if n > 0 && c.Committee.Size > n {
			bad("committee.size", "is %d but only %d clients may enrol", c.Committee.Size, n)
		}
		if c.MinGroupSize < 2 {
			bad("min_group_size", "must be ≥ 2, got %d", c.MinGroupSize)
		}
		if n > 0 && c.MinGroupSize > n {
			bad("min_group_size", "is %d but only %d clients may enrol: no aggregate could be decrypted", c.MinGroupSize, n)
		}
		var err error
		if params, err = aggregation.NewParameters(*c.HEParams); err != nil {
			errs = append(errs, fmt.Errorf("%w: he_params: %v", ErrConfig, err))
		} else {
			// Members refuse what the flooding bound does not cover; a
			// job that could not finish is refused here instead.
			f := params.Config().Flooding
			if c.Committee.Size > f.Committee {
				bad("committee.size", "is %d but he_params.flooding.committee covers committees of at most %d", c.Committee.Size, f.Committee)
			}
			if n > f.Contributors {
				bad("clients.enrolment", "lists %d clients but he_params.flooding.contributors covers aggregates of at most %d", n, f.Contributors)
			}
		}
	default:
		bad("secure_aggregation", "must be \"he\" or \"none\", got %q", c.SecureAggregation)
	}
	if len(errs) > 0 {
		return Job{}, errors.Join(errs...)
	}
	return Job{JobConfig: c, Dir: dir, Params: params, DP: dp}, nil
}

// validateClasses checks data.classes, and fills the names from the count
// (a config literal) or the count from the names (a job file).
func (c *JobConfig) validateClasses(bad func(field, format string, args ...any)) {
	d := &c.Data
	switch {
	case len(d.ClassNames) == 0 && (d.Classes < 2 || d.Classes > maxClasses):
		bad("data.classes", "must be between 2 and %d, got %d", maxClasses, d.Classes)
		return
	case len(d.ClassNames) == 0:
		d.ClassNames = NumberedClasses(d.Classes)
		return
	case d.Classes != 0 && d.Classes != len(d.ClassNames):
		bad("data.classes", "names %d classes, but the class count is %d", len(d.ClassNames), d.Classes)
	case len(d.ClassNames) < 2:
		bad("data.classes", "must name at least 2 classes, got %d", len(d.ClassNames))
	case len(d.ClassNames) > maxClasses:
		bad("data.classes", "must name at most %d classes, got %d", maxClasses, len(d.ClassNames))
	}
	d.ClassNames = slices.Clone(d.ClassNames)
	seen := make(map[string]int, len(d.ClassNames))
	for k, name := range d.ClassNames {
		f := fmt.Sprintf("data.classes[%d]", k)
		if j, dup := seen[name]; dup {
			bad(f, "%q repeats data.classes[%d]", name, j)
		}
		seen[name] = k
		if strings.TrimSpace(name) != name || name == "" {
			bad(f, "%q is empty or has leading or trailing spaces, which label fields never keep", name)
		}
		// A label field is matched against the names first and read as an
		// index second, so a class named "1" at index 0 would turn a
		// file's label 1 into class 0: refuse the ambiguity.
		if i, err := strconv.Atoi(name); err == nil && i != k {
			bad(f, "%q is a number other than its index %d: a label %s would be ambiguous; name the class or put it at index %d", name, k, name, i)
		}
	}
	d.Classes = len(d.ClassNames)
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return false
		}
	}
	return true
}

// ClientIDs lists the enrolled identities in sorted order.
func (j Job) ClientIDs() []string {
	ids := make([]string, len(j.Clients.Enrolment))
	for i, e := range j.Clients.Enrolment {
		ids[i] = e.ID
	}
	sort.Strings(ids)
	return ids
}

// tokenHash is the hex SHA-256 a job keeps of an enrolment token: the same
// hash as internal/auth.TokenHash, which the service checks presented
// tokens with (package coordinator's TestTokenHashAgrees keeps the two
// equal). The engine cannot import internal/auth, which imports gRPC.
func tokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}
