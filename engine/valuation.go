package engine

import (
	"crypto/sha256"
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/ledger/payout"
	"github.com/tallyfl/tally/valuation"
)

// Valuation modes (docs/DESIGN.md §3), and "off" for a job that trains without
// scoring anyone (no values, no payouts, no receipts).
const (
	ModePlain     = "plain"
	ModeGroups    = "groups"
	ModeInfluence = "influence"
	ModeOff       = "off"
)

// Server steps a coalition is valued after (ValuationConfig.Step).
const (
	StepLineSearch = "line-search"
	StepFedAvg     = "fedavg"
)

// Vector methods, computed from updates or scalars rather than a game.
const (
	MethodCGSV      = "cgsv"
	MethodInfluence = "influence"
)

// exactBound is the largest round valued with exact Shapley by default;
// above it the default is permutation Monte Carlo. 2^16 utilities is about
// what a round affords with a cheap model (measured: BENCHMARKS.md).
const exactBound = 16

// sampledBound is the largest round valued with a coalition game by
// default: a coalition is a 64-bit set (valuation.MaxPlayers), so above
// it the default is the influence method, the first-order value
// −aᵢ/Σn computed from each client's scalar (influence mode) or update
// (plain and groups modes) without enumerating coalitions. Measured with
// 1,000 clients in one 2-core process (wsn, committee 16/t 11): influence
// rounds took 63 s against 20 s with valuation off, nearly all of it the
// committee's 1,000 coefficient shares, which separate machines compute
// in parallel; the coordinator's own share was a few seconds.
const sampledBound = valuation.MaxPlayers

// players is the most players a round's valuation game can have: every
// selected client, or in groups mode one per group.
func (j *JobConfig) players() int {
	n := len(j.Clients.Enrolment)
	if j.Clients.Fraction > 0 && j.Clients.Fraction < 1 {
		n = int(math.Ceil(j.Clients.Fraction * float64(n)))
	}
	if j.Valuation.Mode == ModeGroups && j.MinGroupSize > 0 {
		n /= j.MinGroupSize
	}
	return n
}

// ValuationConfig chooses how contributions are scored every round.
type ValuationConfig struct {
	// Mode is plain (updates in the clear: secure_aggregation none only),
	// groups (sums over a seeded partition into groups of ≥ min_group_size),
	// influence (one scalar ⟨∇L_val, n_i·Δ_i⟩ per client) or off (train
	// only). Default: influence with he, plain with none.
	Mode string `yaml:"mode"`
	// Method is a valuation method: exact-shapley, exact-banzhaf, loo,
	// monte-carlo, tmc, gtg, banzhaf, cgsv or influence. Default:
	// exact-shapley up to 16 clients, monte-carlo up to 63 players per
	// round, influence above (coalition games hold at most 63 players).
	Method string `yaml:"method"`
	// Utility is what a coalition's model is scored by: loss (the
	// negative validation loss, default) or accuracy.
	Utility string `yaml:"utility"`
	// Step is the server step a coalition is scored after: line-search
	// (default: the best step along the coalition's direction, beyond what
	// the server already knows, the previous global change; see
	// valuation.FederatedOptions.LineSearch) or fedavg (the FedAvg step of
	// the coalition's updates, which rewards diluting an overshooting step
	// and echoing the previous change).
	Step string `yaml:"step"`
	// Decay weighs round r's values by decay^(R−r) in the job's totals; 1
	// (default) sums them (FedSV).
	Decay float64 `yaml:"decay"`
	// Estimator tunes sampled methods (budget, se_target, …); its seed is
	// derived from the job seed and the round.
	Estimator valuation.Config `yaml:"estimator"`
}

// PaymentConfig turns values into payouts and usage quotas.
type PaymentConfig struct {
	// BudgetPerRound is paid out every round in proportion to positive value.
	BudgetPerRound float64 `yaml:"budget_per_round"`
	// BaselineShare of the budget (and of quota credits) is split equally
	// among every valid submission, whatever its value.
	BaselineShare float64 `yaml:"baseline_share"`
	// QuotaCapacity is the size of each client's basket of usage credits;
	// QuotaPerRound the credits issued per round. What would overflow a
	// basket is lost, so nobody hoards.
	QuotaCapacity float64 `yaml:"quota_capacity"`
	QuotaPerRound float64 `yaml:"quota_per_round"`
}

func (j *JobConfig) valuationDefaults() {
	v := &j.Valuation
	if v.Mode == "" {
		v.Mode = ModePlain
		if j.SecureAggregation == "he" {
			v.Mode = ModeInfluence
		}
	}
	if v.Method == "" {
		switch {
		case j.players() > sampledBound:
			v.Method = MethodInfluence
		case len(j.Clients.Enrolment) > exactBound:
			v.Method = "monte-carlo"
		default:
			v.Method = "exact-shapley"
		}
	}
	if v.Utility == "" {
		v.Utility = "loss"
	}
	if v.Step == "" {
		v.Step = StepLineSearch
	}
	if v.Decay == 0 {
		v.Decay = 1
	}
	if j.Payment.BudgetPerRound == 0 {
		j.Payment.BudgetPerRound = 100
	}
	if j.Payment.QuotaCapacity == 0 {
		j.Payment.QuotaCapacity = 1000
	}
	if j.Payment.QuotaPerRound == 0 {
		j.Payment.QuotaPerRound = 100
	}
}

func (j *JobConfig) validateValuation(bad func(field, format string, args ...any)) {
	v := j.Valuation
	switch v.Mode {
	case ModePlain:
		if j.SecureAggregation == "he" {
			bad("valuation.mode", "plain needs every update in the clear, which secure_aggregation: he never allows; use groups or influence")
		}
	case ModeGroups, ModeInfluence, ModeOff:
	default:
		bad("valuation.mode", "must be plain, groups, influence or off, got %q", v.Mode)
	}
	known := append(valuation.Methods(), MethodCGSV, MethodInfluence)
	switch {
	case !slices.Contains(known, v.Method):
		bad("valuation.method", "must be one of %v, got %q", known, v.Method)
	case v.Method == MethodCGSV && v.Mode == ModeInfluence:
		bad("valuation.method", "cgsv needs update vectors, which the influence mode never reveals; use a game method or influence")
	case (v.Method == "exact-shapley" || v.Method == "exact-banzhaf") && len(j.Clients.Enrolment) > valuation.MaxExactPlayers && v.Mode != ModeGroups:
		bad("valuation.method", "%s enumerates 2^n coalitions and is refused above %d players; this job has %d clients: use monte-carlo, tmc, gtg or banzhaf",
			v.Method, valuation.MaxExactPlayers, len(j.Clients.Enrolment))
	case v.Mode != ModeOff && v.Method != MethodCGSV && v.Method != MethodInfluence && j.players() > valuation.MaxPlayers:
		bad("valuation.method", "%s plays a coalition game of at most %d players, and a round of this job can have %d: use influence (or cgsv in plain mode), or valuation.mode off",
			v.Method, valuation.MaxPlayers, j.players())
	}
	switch v.Utility {
	case "loss", "accuracy":
	default:
		bad("valuation.utility", "must be loss or accuracy, got %q", v.Utility)
	}
	switch v.Step {
	case StepLineSearch, StepFedAvg:
	default:
		bad("valuation.step", "must be %s or %s, got %q", StepLineSearch, StepFedAvg, v.Step)
	}
	if !(v.Decay > 0 && v.Decay <= 1) {
		bad("valuation.decay", "must be in (0, 1], got %g", v.Decay)
	}
	if err := v.Estimator.Validate(); err != nil {
		bad("valuation.estimator", "%v", err)
	}
	p := j.Payment
	if p.BudgetPerRound < 0 {
		bad("payment.budget_per_round", "must be ≥ 0, got %g", p.BudgetPerRound)
	}
	if p.BaselineShare < 0 || p.BaselineShare > 1 {
		bad("payment.baseline_share", "must be in [0, 1], got %g", p.BaselineShare)
	}
	if p.QuotaCapacity < 0 || p.QuotaPerRound < 0 {
		bad("payment", "quota_capacity and quota_per_round must be ≥ 0")
	}
}

// Valuer scores one round's players. It is pure computation; the engine
// calls it synchronously after a round's aggregate is known.
//
// known is what the server knows before the round, the previous global
// change (nil in the first round and after a restart); with the
// line-search step a coalition is valued beyond it.
type Valuer interface {
	// Game values players from their (mean) updates and weights against
	// base, with the configured coalition or vector method.
	Game(round int, base, known []float64, updates [][]float64, weights []float64, scaler *dataset.Scaler) (valuation.Result, error)
	// Surrogate values players from influence scalars a_i = ⟨v, n_i·Δ_i⟩
	// against the public vector v of Gradient; total is the round's
	// decrypted aggregate step.
	Surrogate(round int, base, known, total, a, weights []float64, scaler *dataset.Scaler) (valuation.Result, error)
	// Gradient is the influence scalars' public vector: ∇L_val at base, or
	// with the line-search step at the server's own step along known,
	// with its component along known removed.
	Gradient(base, known []float64, scaler *dataset.Scaler) ([]float64, error)
}

// RoundValuation is what the valuation of one round produced.
type RoundValuation struct {
	Mode   string `json:"mode"`
	Method string `json:"method"`
	// Values and StdErr map each contributor to its value this round (for
	// groups: its weight share of its group's value).
	Values map[string]float64 `json:"values"`
	StdErr map[string]float64 `json:"stderr"`
	// Groups lists the partition in groups mode.
	Groups [][]string `json:"groups,omitempty"`
	// Replicas lists the clusters of clients found to be copies of one
	// another (valuation.UpdateReplicas in plain mode, ScalarReplicas in
	// influence mode), each valued as one player and its value shared
	// equally among them.
	Replicas    [][]string `json:"replicas,omitempty"`
	Evaluations int        `json:"utility_evaluations"`
	Error       string     `json:"error,omitempty"`
	// Payouts and Quotas are what each contributor earned this round;
	// Balance is its quota basket after this round's credit.
	Payouts map[string]float64 `json:"payouts"`
	Quotas  map[string]float64 `json:"quotas"`
	Balance map[string]float64 `json:"balance"`
	Unspent float64            `json:"unspent"`
}

// pay turns a round's values into payouts and quota credits. Every
// contributor made a valid submission, so each gets the baseline share;
// a contributor without a value (valuation failed) gets only that.
func (e *Engine) pay(rec *RoundRecord) {
	rv := rec.Valuation
	if rv == nil {
		return
	}
	ids := rec.Contributors
	values := make([]float64, len(ids))
	for i, id := range ids {
		values[i] = rv.Values[id]
	}
	p := e.job.Payment
	payouts, unspent, err := payout.Payouts(values, p.BudgetPerRound, p.BaselineShare, nil)
	if err == nil {
		var credits []float64
		if credits, err = payout.Quotas(values, p.QuotaPerRound, p.BaselineShare, nil); err == nil {
			rv.Payouts, rv.Quotas, rv.Balance, rv.Unspent = map[string]float64{}, map[string]float64{}, map[string]float64{}, unspent
			for i, id := range ids {
				b := e.baskets[id]
				if b == nil {
					b = &payout.Basket{Capacity: p.QuotaCapacity}
					e.baskets[id] = b
				}
				credited, _ := b.Credit(credits[i])
				rv.Payouts[id], rv.Quotas[id], rv.Balance[id] = payouts[i], credited, b.Balance
			}
		}
	}
	if err != nil && rv.Error == "" {
		rv.Error = err.Error()
	}
}

// partition splits players (sorted) into a seeded random partition of
// groups of at least k: ⌊m/k⌋ groups, the remainder dealt one each.
func partition(players []string, k int, seed uint64, round, attempt int) [][]string {
	h := sha256.New()
	fmt.Fprintf(h, "%d|groups|%d|%d", seed, round, attempt)
	s := h.Sum(nil)
	rng := newPCG(s)
	p := slices.Clone(players)
	rng.Shuffle(len(p), func(i, j int) { p[i], p[j] = p[j], p[i] })
	n := max(1, len(p)/k)
	groups := make([][]string, n)
	for i, id := range p {
		groups[i%n] = append(groups[i%n], id)
	}
	for _, g := range groups {
		sort.Strings(g)
	}
	return groups
}

// Contribution is a client's standing over a whole job.
type Contribution struct {
	Client string  `json:"client"`
	Value  float64 `json:"value"`
	StdErr float64 `json:"stderr"`
	// Rank is 1 for the most valuable client.
	Rank   int     `json:"rank"`
	Payout float64 `json:"payout"`
	// Quota is the client's basket balance after the last round.
	Quota  float64 `json:"quota"`
	Rounds int     `json:"rounds"`
}

// Contributions totals the valued rounds of history: values summed with
// the job's freshness decay (FedSV), payouts summed, quota balances as
// they stand. Clients are sorted by rank.
func Contributions(job Job, history []RoundRecord) ([]Contribution, error) {
	acc, err := valuation.NewAccumulator(job.Valuation.Decay)
	if err != nil {
		return nil, err
	}
	byID := map[string]*Contribution{}
	for _, r := range history {
		if r.Failed || r.Valuation == nil {
			continue
		}
		rv := r.Valuation
		ids := make([]string, 0, len(rv.Values))
		for id := range rv.Values {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		vals, ses := make([]float64, len(ids)), make([]float64, len(ids))
		for i, id := range ids {
			vals[i], ses[i] = rv.Values[id], rv.StdErr[id]
		}
		if err := acc.AddRound(ids, vals, ses); err != nil {
			return nil, fmt.Errorf("round %d: %w", r.Round, err)
		}
		for _, id := range r.Contributors {
			c := byID[id]
			if c == nil {
				c = &Contribution{Client: id}
				byID[id] = c
			}
			c.Payout += rv.Payouts[id]
			if b, ok := rv.Balance[id]; ok {
				c.Quota = b
			}
			c.Rounds++
		}
	}
	out := make([]Contribution, 0, len(byID))
	for id, c := range byID {
		if t, ok := acc.Get(id); ok {
			c.Value, c.StdErr = t.Value, t.StdErr
		}
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Value != out[j].Value {
			return out[i].Value > out[j].Value
		}
		return out[i].Client < out[j].Client
	})
	for i := range out {
		out[i].Rank = i + 1
	}
	return out, nil
}

// SetValuer makes the engine score every round's contributors.
func (e *Engine) SetValuer(v Valuer) { e.valuer = v }

// valueClear scores a round whose updates the coordinator holds in the
// clear (secure_aggregation: none), in the job's valuation mode. A
// valuation error is recorded, not fatal: the model still advances.
func (e *Engine) valueClear(rec *RoundRecord, t *Task, results []Result) {
	if e.valuer == nil {
		return
	}
	for _, r := range results {
		// Without encryption the coordinator sees each update: say so.
		rec.Decryptions = append(rec.Decryptions, DecryptionRecord{Purpose: "cleartext-update", Contributors: 1, Clients: []string{r.Client}})
	}
	cfg := e.job.Valuation
	rv := &RoundValuation{Mode: cfg.Mode, Method: cfg.Method, Values: map[string]float64{}, StdErr: map[string]float64{}}
	rec.Valuation = rv
	var res valuation.Result
	var err error
	switch cfg.Mode {
	case ModePlain:
		updates, weights := make([][]float64, len(results)), make([]float64, len(results))
		ids := make([]string, len(results))
		for i, r := range results {
			updates[i], weights[i], ids[i] = r.Update, float64(r.Samples), r.Client
		}
		res, err = valueAsOne(rv, ids, valuation.UpdateReplicas(updates), updates, weights, func(us [][]float64, ws []float64) (valuation.Result, error) {
			return e.valuer.Game(t.Round, e.global, e.known, us, ws, e.scaler)
		})
	case ModeGroups:
		byID := map[string]Result{}
		for _, r := range results {
			byID[r.Client] = r
		}
		rv.Groups = partition(sortedIDs(results), e.job.MinGroupSize, e.job.Seed, t.Round, t.Attempt)
		updates, weights := make([][]float64, len(rv.Groups)), make([]float64, len(rv.Groups))
		for g, members := range rv.Groups {
			var us [][]float64
			var ws []float64
			for _, id := range members {
				us, ws = append(us, byID[id].Update), append(ws, float64(byID[id].Samples))
				weights[g] += float64(byID[id].Samples)
			}
			if updates[g], err = aggregation.FedAvg(us, ws); err != nil {
				break
			}
		}
		if err == nil {
			if res, err = e.valuer.Game(t.Round, e.global, e.known, updates, weights, e.scaler); err == nil {
				err = e.splitGroups(rv, res, func(id string) float64 { return float64(byID[id].Samples) })
			}
		}
	case ModeInfluence:
		var g []float64
		if g, err = e.valuer.Gradient(e.global, e.known, e.scaler); err == nil {
			updates, weights := make([][]float64, len(results)), make([]float64, len(results))
			for i, r := range results {
				updates[i], weights[i] = r.Update, float64(r.Samples)
			}
			var a, total []float64
			if a, err = valuation.InfluenceCoefficients(g, updates, weights); err == nil {
				// The round's FedAvg step, as the committee would decrypt it.
				total = make([]float64, len(e.global))
				var n float64
				for i, u := range updates {
					n += weights[i]
					for k, x := range u {
						total[k] += weights[i] * x
					}
				}
				for k := range total {
					total[k] /= n
				}
				ids := make([]string, len(results))
				for i, r := range results {
					ids[i] = r.Client
				}
				res, err = e.surrogateAsOne(rv, t, ids, total, a, weights)
			}
		}
	}
	rv.Evaluations = res.Evaluations
	if err != nil {
		rv.Error = err.Error()
	}
}

// valueAsOne values a round whose players ids (updates, weights) fall into
// clusters of copies: each cluster is one player (MergeReplicas) and its
// value is shared equally (SplitReplicas). It fills rv's values and
// replicas and returns the game's result.
func valueAsOne(rv *RoundValuation, ids []string, clusters [][]int, updates [][]float64, weights []float64, value func([][]float64, []float64) (valuation.Result, error)) (valuation.Result, error) {
	us, ws, err := valuation.MergeReplicas(clusters, updates, weights)
	if err != nil {
		return valuation.Result{}, err
	}
	res, err := value(us, ws)
	if err != nil {
		return res, err
	}
	vals, ses := valuation.SplitReplicas(clusters, res.Values, res.StdErr, len(ids))
	for i, id := range ids {
		rv.Values[id], rv.StdErr[id] = vals[i], ses[i]
	}
	for _, c := range clusters {
		if len(c) > 1 {
			names := make([]string, len(c))
			for k, i := range c {
				names[k] = ids[i]
			}
			rv.Replicas = append(rv.Replicas, names)
		}
	}
	return res, nil
}

// surrogateAsOne values influence scalars a (of clients ids, weights) on
// the surrogate game with copies (ScalarReplicas) as one player: their
// mean scalar and mean weight.
func (e *Engine) surrogateAsOne(rv *RoundValuation, t *Task, ids []string, total, a, weights []float64) (valuation.Result, error) {
	as := make([][]float64, len(a))
	for i, x := range a {
		as[i] = []float64{x}
	}
	return valueAsOne(rv, ids, valuation.ScalarReplicas(a, weights), as, weights, func(us [][]float64, ws []float64) (valuation.Result, error) {
		m := make([]float64, len(us))
		for c, u := range us {
			m[c] = u[0]
		}
		return e.valuer.Surrogate(t.Round, e.global, e.known, total, m, ws, e.scaler)
	})
}

// splitGroups shares each group's value among its members by weight.
func (e *Engine) splitGroups(rv *RoundValuation, res valuation.Result, weight func(string) float64) error {
	for g, members := range rv.Groups {
		ws := make([]float64, len(members))
		for i, id := range members {
			ws[i] = weight(id)
		}
		vals, ses, err := valuation.SplitByWeight(res.Values[g], at(res.StdErr, g), ws)
		if err != nil {
			return err
		}
		for i, id := range members {
			rv.Values[id], rv.StdErr[id] = vals[i], ses[i]
		}
	}
	return nil
}

func at(v []float64, i int) float64 {
	if i < len(v) {
		return v[i]
	}
	return 0
}

func sortedIDs(results []Result) []string {
	ids := make([]string, len(results))
	for i, r := range results {
		ids[i] = r.Client
	}
	sort.Strings(ids)
	return ids
}
