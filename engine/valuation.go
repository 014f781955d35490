package engine

import (
	"crypto/sha256"
	"errors"
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
	// ModeProjection values each coalition at the true validation loss
	// of its step projected onto public vectors, from every client's
	// inner products with them (valuation.NewProjectionGame; issue 16).
	ModeProjection = "projection"
	ModeOff        = "off"
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
	// only). Default: projection with he, plain with none.
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
	// Scalars is what the job declares it decrypts per client and round
	// beyond sums of ≥ k updates: in projection mode its public vectors,
	// valuation.ProjectionVectorCount(classes) (the default there: 6 for
	// two classes, 9 for five or more), 0 otherwise (influence mode's one
	// scalar is the manifest's default L). It may not exceed the
	// manifest's security.max_scalars_per_client_round (ErrScalars), and
	// `tally ledger verify` holds the transcript to it. Omitted from the
	// job's identity when 0.
	Scalars int `yaml:"scalars_per_round,omitempty"`
}

// ErrScalars: a job declares more released scalars per client and round
// than the manifest's L allows (security.max_scalars_per_client_round).
var ErrScalars = errors.New("engine: the job releases more scalars per client and round than the manifest allows")

// ScalarsPerRound is L, the scalars per client and round the job's
// members release: the declared count, at least 1.
func (j *JobConfig) ScalarsPerRound() int { return max(j.Valuation.Scalars, 1) }

// projectionScalars is the projection mode's vector count for the job's
// classes.
func (j *JobConfig) projectionScalars() int {
	return valuation.ProjectionVectorCount(max(j.Data.Classes, len(j.Data.ClassNames)))
}

// PaymentConfig turns values into payouts and usage quotas
// (docs/DESIGN.md §4). The baseline share of the budget is paid every
// round, equally to every valid submission; the rest, the value part, is
// held in escrow and settled once at the end of the job (or of each
// period) in proportion to max(V_i, 0), V_i the client's netted, decayed
// total over the period (payout.Period). Nothing paid is ever taken back.
type PaymentConfig struct {
	// Budget is what the whole job pays, or with PeriodRounds what each
	// period pays. Default: BudgetPerRound × rounds (or × period_rounds).
	// It and PeriodRounds are omitted from the job's identity when unset,
	// so that state files written before them still resume.
	Budget float64 `yaml:"budget,omitempty"`
	// PeriodRounds, when > 0, settles the value part every PeriodRounds
	// rounds, for jobs that may be extended or have no planned end; 0
	// settles once, when the job ends.
	PeriodRounds int `yaml:"period_rounds,omitempty"`
	// BudgetPerRound is the old form of the budget, kept so that old job
	// files stay valid: given alone, Budget = BudgetPerRound × rounds (or
	// × period_rounds). Default 100.
	BudgetPerRound float64 `yaml:"budget_per_round"`
	// BaselineShare of the budget (and of quota credits) is split equally
	// among every valid submission of a round, whatever its value.
	BaselineShare float64 `yaml:"baseline_share"`
	// QuotaCapacity is the size of each client's basket of usage credits;
	// QuotaPerRound the credits issued per round, by the same rule as the
	// budget (baseline each round, the rest at settlement). What would
	// overflow a basket is lost, so nobody hoards.
	QuotaCapacity float64 `yaml:"quota_capacity"`
	QuotaPerRound float64 `yaml:"quota_per_round"`
}

// BudgetFor is what the job pays in all, or with PeriodRounds what each
// period pays, for a job of rounds rounds. It is computed, not stored
// in the config, so that raising rounds (which extends a job and is not
// part of its identity) scales an old budget_per_round with it.
func (p PaymentConfig) BudgetFor(rounds int) float64 {
	if p.Budget > 0 {
		return p.Budget
	}
	if p.PeriodRounds > 0 {
		rounds = p.PeriodRounds
	}
	return p.BudgetPerRound * float64(rounds)
}

func (j *JobConfig) valuationDefaults() {
	v := &j.Valuation
	if v.Mode == "" {
		v.Mode = ModePlain
		if j.SecureAggregation == "he" {
			// projection, not influence: it reaches ρ 0.914 against
			// plaintext exact Shapley over the exact scenarios (influence
			// 0.644) and honest payout ρ 1.000 on the demo (issues 15, 16).
			// Its coalition game holds at most sampledBound players, so a
			// larger round keeps influence mode, whose method needs none.
			v.Mode = ModeProjection
			if j.players() > sampledBound {
				v.Mode = ModeInfluence
			}
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
	if v.Mode == ModeProjection && v.Scalars == 0 {
		v.Scalars = j.projectionScalars()
	}
	if v.Step == "" {
		v.Step = StepLineSearch
	}
	if v.Decay == 0 {
		v.Decay = 1
	}
	if p := &j.Payment; p.Budget == 0 && p.BudgetPerRound == 0 {
		p.BudgetPerRound = 100
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
	case ModeGroups, ModeInfluence, ModeProjection, ModeOff:
	default:
		bad("valuation.mode", "must be plain, groups, influence, projection or off, got %q", v.Mode)
	}
	switch {
	case v.Mode == ModeProjection && v.Scalars != j.projectionScalars():
		bad("valuation.scalars_per_round", "projection mode releases %d scalars per client and round for %d classes (valuation.ProjectionVectorCount), the job declares %d",
			j.projectionScalars(), max(j.Data.Classes, len(j.Data.ClassNames)), v.Scalars)
	case v.Mode != ModeProjection && v.Scalars > 1:
		bad("valuation.scalars_per_round", "only projection mode releases more than one scalar per client and round, got %d", v.Scalars)
	case v.Scalars < 0:
		bad("valuation.scalars_per_round", "must be ≥ 0, got %d", v.Scalars)
	}

	known := append(valuation.Methods(), MethodCGSV, MethodInfluence)
	switch {
	case !slices.Contains(known, v.Method):
		bad("valuation.method", "must be one of %v, got %q", known, v.Method)
	case v.Method == MethodCGSV && v.Mode == ModeInfluence:
		bad("valuation.method", "cgsv needs update vectors, which the influence mode never reveals; use a game method or influence")
	case (v.Method == MethodCGSV || v.Method == MethodInfluence) && v.Mode == ModeProjection:
		bad("valuation.method", "%s is a vector method; projection mode plays a coalition game: use exact-shapley, monte-carlo, tmc, gtg, banzhaf or loo", v.Method)
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
	if p.Budget != 0 && p.BudgetPerRound != 0 {
		bad("payment.budget", "give budget (the job's, or each period's) or the older budget_per_round, not both")
	}
	if p.Budget < 0 || math.IsNaN(p.Budget) || math.IsInf(p.Budget, 0) {
		bad("payment.budget", "must be finite and ≥ 0, got %g", p.Budget)
	}
	if p.PeriodRounds < 0 {
		bad("payment.period_rounds", "must be ≥ 0 (0: settle once, at the end of the job), got %d", p.PeriodRounds)
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
	// Players lists the clients behind each player of the round's game,
	// in the game's order (a client, a cluster of copies valued as one,
	// or a group): the players of an exported game (--export-games).
	Players [][]string `json:"players,omitempty"`
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
	// Decay is the job's valuation.decay, which the round's receipts
	// carry so that totals over receipts weigh rounds as the job does.
	Decay float64 `json:"decay,omitempty"`
}

// Settlement pays the value part of one period (payout.Period): rounds
// From … Through, of which Done completed, out of the Rounds planned.
// Budget is what the period committed (its baselines and value part), so
// that over a job Σ Budget + the budget of rounds not yet run is the job's
// budget. It is recorded with the round that ends the period (or, when a
// job stops early, the failed attempt that stopped it) and turned into
// signed receipts in the same transaction, so that it happens exactly
// once whatever the coordinator's crashes.
type Settlement struct {
	From    int     `json:"from"`
	Through int     `json:"through"`
	Rounds  int     `json:"rounds"`
	Done    int     `json:"done"`
	Budget  float64 `json:"budget"`
	Escrow  float64 `json:"escrow"`
	Decay   float64 `json:"decay"`
	// Values are the period's totals V_i (payout.Totals: netted, decayed)
	// that the escrow was split by; Payouts and Quotas what each client
	// was paid and credited; Balance its basket after the credit.
	Values  map[string]float64 `json:"values"`
	Payouts map[string]float64 `json:"payouts"`
	Quotas  map[string]float64 `json:"quotas"`
	Balance map[string]float64 `json:"balance"`
	Unspent float64            `json:"unspent"`
	// Replicas are the clusters of copies found over the job so far
	// (valuation.Redundancy, plain mode), valued as one player in every
	// round of the period before the totals were taken
	// (valuation.JobReplicaValues).
	Replicas [][]string `json:"replicas,omitempty"`
	// ReplicasFrom, when set, is the first round whose updates Replicas
	// were found from: the job was resumed from a state file written
	// before the accumulated distances were stored, so the rounds before
	// it were not compared and a copy they would have shown is not caught.
	ReplicasFrom int `json:"replicas_from,omitempty"`
}

// settled returns the last round a settlement covers (0: none) and the
// budget the settlements committed so far.
func (e *Engine) settled() (through int, committed float64) {
	for _, r := range e.history {
		if s := r.Settlement; s != nil && s.Through >= through {
			through = s.Through
			committed += s.Budget
		}
	}
	return through, committed
}

// period returns the settlement period open after the last settlement:
// its first round, its planned last round and its plan. With
// period_rounds P the periods are rounds (kP, (k+1)P], the last one cut at
// the job's end and its budget in proportion; without, one period runs to
// the job's last round with what the budget has not committed yet (all of
// it, unless the job was extended after settling or stopped early).
func (e *Engine) period() (from, to int, p payout.Period) {
	through, committed := e.settled()
	pc := e.job.Payment
	from, to = through+1, e.job.Rounds
	p = payout.Period{BaselineShare: pc.BaselineShare}
	if pc.PeriodRounds > 0 {
		to = min(((from-1)/pc.PeriodRounds+1)*pc.PeriodRounds, e.job.Rounds)
		p.Rounds = max(to-from+1, 1)
		p.Budget = pc.BudgetFor(e.job.Rounds) * float64(p.Rounds) / float64(pc.PeriodRounds)
		return from, to, p
	}
	p.Rounds = max(to-from+1, 1)
	p.Budget = max(pc.BudgetFor(e.job.Rounds)-committed, 0)
	return from, to, p
}

// pay pays a completed round's baseline: every contributor made a valid
// submission, so each gets a part of the round's baseline in proportion to
// the rows n_i it submitted under (within what it declared at enrolment,
// which submit checks), and a basket credit by the same rule. Split by
// rows, a holder gains nothing by dividing its rows among identities. The
// round's values count towards the period's settlement; nothing of the
// value part is paid here.
func (e *Engine) pay(rec *RoundRecord) {
	rv := rec.Valuation
	if rv == nil {
		return
	}
	_, _, p := e.period()
	weights := make([]float64, len(rec.Contributors))
	var rows float64
	for i, id := range rec.Contributors {
		weights[i] = float64(rec.Samples[id])
		rows += weights[i]
	}
	each, unspent, err := p.Baseline(weights)
	if err != nil {
		if rv.Error == "" {
			rv.Error = err.Error()
		}
		return
	}
	rv.Payouts, rv.Quotas, rv.Balance, rv.Unspent = map[string]float64{}, map[string]float64{}, map[string]float64{}, unspent
	rv.Decay = e.job.Valuation.Decay
	credits := e.baselineCredits(rec)
	for i, id := range rec.Contributors {
		credited, _ := e.basket(id).Credit(credits[id])
		rv.Payouts[id], rv.Quotas[id], rv.Balance[id] = each[i], credited, e.basket(id).Balance
	}
}

// baselineCredits is the quota credit a completed round's baseline issues
// each contributor: BaselineShare · QuotaPerRound split by the rows it
// submitted under, as pay credits it (before the basket's capacity).
func (e *Engine) baselineCredits(rec *RoundRecord) map[string]float64 {
	q := e.job.Payment
	var rows float64
	for _, id := range rec.Contributors {
		rows += float64(rec.Samples[id])
	}
	out := make(map[string]float64, len(rec.Contributors))
	for _, id := range rec.Contributors {
		if rows > 0 {
			out[id] = q.BaselineShare * q.QuotaPerRound * float64(rec.Samples[id]) / rows
		} else {
			out[id] = 0
		}
	}
	return out
}

func (e *Engine) basket(id string) *payout.Basket {
	b := e.baskets[id]
	if b == nil {
		b = &payout.Basket{Capacity: e.job.Payment.QuotaCapacity}
		e.baskets[id] = b
	}
	return b
}

// settle settles the open period through round through (the round just
// completed, or the last completed one when the job stops early) if it
// holds a valued round. It returns nil when there is nothing to settle.
func (e *Engine) settle(through int) *Settlement {
	from, _, p := e.period()
	if through < from {
		return nil
	}
	totals, err := payout.NewTotals(e.job.Valuation.Decay)
	if err != nil {
		panic(err) // validated with the job
	}
	jobReplicas := e.jobReplicas()
	done := 0
	// What the period's baselines already paid and credited each client:
	// the settlement pays the escrow so that nobody's pay in all is
	// ordered against its value (payout.Level).
	prepaid, precredited := map[string]float64{}, map[string]float64{}
	for _, r := range e.history {
		if r.Failed || r.Round < from || r.Round > through {
			continue
		}
		done++
		if r.Valuation == nil {
			continue
		}
		for id, x := range r.Valuation.Payouts {
			prepaid[id] += x
		}
		for id, x := range e.baselineCredits(&r) {
			precredited[id] += x
		}
		ids, vals, ses := roundValues(r.Valuation)
		vals = asOneOverJob(ids, vals, r.Valuation.Replicas, jobReplicas)
		if err := totals.AddRound(ids, vals, ses); err != nil {
			panic(fmt.Sprintf("engine: round %d values: %v", r.Round, err)) // finite, checked when valued
		}
	}
	if done == 0 {
		return nil
	}
	done = min(done, p.Rounds)
	ids := totals.IDs()
	vals := make([]float64, len(ids))
	for i, id := range ids {
		vals[i], _, _, _ = totals.Get(id)
	}
	pre, prec := make([]float64, len(ids)), make([]float64, len(ids))
	for i, id := range ids {
		pre[i], prec[i] = prepaid[id], precredited[id]
	}
	pays, credits, unspent, err := p.Settle(vals, pre, prec, done, e.job.Payment.QuotaPerRound)
	if err != nil {
		panic(fmt.Sprintf("engine: settlement of rounds %d–%d: %v", from, through, err))
	}
	s := &Settlement{From: from, Through: through, Rounds: p.Rounds, Done: done, Budget: p.Committed(done), Escrow: p.Escrow(done),
		Decay: e.job.Valuation.Decay, Values: map[string]float64{}, Payouts: map[string]float64{}, Quotas: map[string]float64{},
		Balance: map[string]float64{}, Unspent: unspent}
	for i, id := range ids {
		credited, _ := e.basket(id).Credit(credits[i])
		s.Values[id], s.Payouts[id], s.Quotas[id], s.Balance[id] = vals[i], pays[i], credited, e.basket(id).Balance
	}
	s.Replicas = jobReplicas
	if e.job.Valuation.Mode == ModePlain && e.redundancyFrom > 1 {
		s.ReplicasFrom = e.redundancyFrom
	}
	return s
}

// jobReplicas lists the clusters of copies found over the job's plain-mode
// rounds so far (valuation.Redundancy), each sorted, in a fixed order.
func (e *Engine) jobReplicas() [][]string {
	if e.redundancy == nil {
		return nil
	}
	seen := map[string]bool{}
	var ids []string
	for _, r := range e.history {
		if r.Failed || r.Valuation == nil {
			continue
		}
		for id := range r.Valuation.Values {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
	}
	sort.Strings(ids)
	var out [][]string
	for _, c := range e.redundancy.Replicas(ids) {
		if len(c) > 1 {
			names := make([]string, len(c))
			for k, i := range c {
				names[k] = ids[i]
			}
			out = append(out, names)
		}
	}
	return out
}

// asOneOverJob values one round's clients of each cluster found over the
// job as one player (valuation.JobReplicaValues), given the clusters the
// round itself merged.
func asOneOverJob(ids []string, vals []float64, merged, job [][]string) []float64 {
	if len(job) == 0 {
		return vals
	}
	out, err := valuation.JobReplicaValues(ids, vals, merged, job)
	if err != nil {
		panic(fmt.Sprintf("engine: %v", err)) // ids and vals come from one map
	}
	return out
}

// roundValues lists a round's values by client id.
func roundValues(rv *RoundValuation) (ids []string, vals, ses []float64) {
	ids = make([]string, 0, len(rv.Values))
	for id := range rv.Values {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	vals, ses = make([]float64, len(ids)), make([]float64, len(ids))
	for i, id := range ids {
		vals[i], ses[i] = rv.Values[id], rv.StdErr[id]
	}
	return ids, vals, ses
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
	Client string `json:"client"`
	// Value is the client's total: its rounds' credited values
	// (payout.Credit) summed with the job's freshness decay, negative
	// rounds netted against positive ones.
	Value  float64 `json:"value"`
	StdErr float64 `json:"stderr"`
	// Rank is 1 for the most valuable client.
	Rank int `json:"rank"`
	// Payout is everything paid so far: the rounds' baselines and the
	// settlements' value parts.
	Payout float64 `json:"payout"`
	// Quota is the client's basket balance after the last round.
	Quota  float64 `json:"quota"`
	Rounds int     `json:"rounds"`
}

// Contributions totals the valued rounds of history: values credited and
// summed with the job's freshness decay (payout.Totals, as settlements
// and `tally scores` do; in the rounds a settlement covers, with its
// clusters of copies valued as one, as it valued them), payouts summed
// over rounds and settlements, quota balances as they stand. Clients are
// sorted by rank.
func Contributions(job Job, history []RoundRecord) ([]Contribution, error) {
	acc, err := payout.NewTotals(job.Valuation.Decay)
	if err != nil {
		return nil, err
	}
	byID := map[string]*Contribution{}
	get := func(id string) *Contribution {
		c := byID[id]
		if c == nil {
			c = &Contribution{Client: id}
			byID[id] = c
		}
		return c
	}
	// Rounds a settlement covers are totalled as it totalled them, copies
	// found over the job valued as one.
	jobReplicas := func(round int) [][]string {
		for _, r := range history {
			if s := r.Settlement; s != nil && s.From <= round && round <= s.Through {
				return s.Replicas
			}
		}
		return nil
	}
	for _, r := range history {
		if !r.Failed && r.Valuation != nil {
			rv := r.Valuation
			ids, vals, ses := roundValues(rv)
			vals = asOneOverJob(ids, vals, rv.Replicas, jobReplicas(r.Round))
			if err := acc.AddRound(ids, vals, ses); err != nil {
				return nil, fmt.Errorf("round %d: %w", r.Round, err)
			}
			for _, id := range r.Contributors {
				c := get(id)
				c.Payout += rv.Payouts[id]
				if b, ok := rv.Balance[id]; ok {
					c.Quota = b
				}
				c.Rounds++
			}
		}
		if s := r.Settlement; s != nil {
			for id, p := range s.Payouts {
				c := get(id)
				c.Payout += p
				c.Quota = s.Balance[id]
			}
		}
	}
	out := make([]Contribution, 0, len(byID))
	for id, c := range byID {
		if v, se, _, ok := acc.Get(id); ok {
			c.Value, c.StdErr = v, se
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
		// The round's sums count once it completes (commitRedundancy).
		next := valuation.NewRedundancy()
		if e.redundancy != nil {
			next = e.redundancy.Clone()
		}
		if err = next.Add(ids, updates); err != nil {
			break
		}
		e.pendingRedundancy = next
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
	case ModeProjection:
		res, err = e.valueProjectionClear(rv, t, results)
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
// clusters of copies: each cluster is one player (MergeReplicas), its
// value capped per row (CapPerWeight) and shared equally (SplitReplicas).
// It fills rv's values and replicas and returns the game's result.
func valueAsOne(rv *RoundValuation, ids []string, clusters [][]int, updates [][]float64, weights []float64, value func([][]float64, []float64) (valuation.Result, error)) (valuation.Result, error) {
	us, ws, err := valuation.MergeReplicas(clusters, updates, weights)
	if err != nil {
		return valuation.Result{}, err
	}
	res, err := value(us, ws)
	if err != nil {
		return res, err
	}
	// No player earns more per declared row than the rows of the players
	// holding at least twice as many earn together, so that splitting
	// one's rows among identities does not pay (CapPerWeight).
	capped, err := valuation.CapPerWeight(res.Values, ws)
	if err != nil {
		return res, err
	}
	for _, c := range clusters {
		names := make([]string, len(c))
		for k, i := range c {
			names[k] = ids[i]
		}
		rv.Players = append(rv.Players, names)
	}
	vals, ses := valuation.SplitReplicas(clusters, capped, res.StdErr, len(ids))
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
	rv.Players = rv.Groups
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
