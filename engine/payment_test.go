package engine

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/valuation"
)

// scriptedValuer values round r's players with values[r-1], by client:
// every client of a payJob submits the update k·(cos k, sin k) for its
// index k, so the valuer can tell who is who from the update's norm.
type scriptedValuer struct{ values [][]float64 }

func (s scriptedValuer) Game(round int, _, _ []float64, updates [][]float64, _ []float64, _ *dataset.Scaler) (valuation.Result, error) {
	out := make([]float64, len(updates))
	for i, u := range updates {
		out[i] = s.values[round-1][int(math.Round(math.Hypot(u[0], u[1])))]
	}
	return valuation.Result{Values: out}, nil
}

func (scriptedValuer) Surrogate(int, []float64, []float64, []float64, []float64, []float64, *dataset.Scaler) (valuation.Result, error) {
	return valuation.Result{}, fmt.Errorf("not scripted")
}

func (scriptedValuer) Gradient([]float64, []float64, *dataset.Scaler) ([]float64, error) {
	return nil, fmt.Errorf("not scripted")
}

// payJob is a plain-mode job of n clients c0 … c(n−1) and the given
// rounds; set changes its payment and valuation before validation.
func payJob(t *testing.T, n, rounds int, set func(*JobConfig)) Job {
	t.Helper()
	cfg := JobConfig{
		ID: "pay", Seed: 7, Rounds: rounds,
		Data:         DataConfig{Features: 2, Classes: 2, Validation: SourceConfig{CSV: "val.csv"}},
		RoundTimeout: Duration(5 * time.Second), Tick: Duration(time.Second),
		Scaling: ScalingConfig{Mode: "none"}, SecureAggregation: "none",
		Clients:   ClientsConfig{Min: n, WaitFor: n, Liveness: Duration(100 * time.Second)},
		Valuation: ValuationConfig{Mode: ModePlain, Method: "exact-shapley"},
	}
	for k := range n {
		id := fmt.Sprintf("c%d", k)
		cfg.Clients.Enrolment = append(cfg.Clients.Enrolment, EnrolmentConfig{ID: id, Token: "token-" + id})
	}
	if set != nil {
		set(&cfg)
	}
	job, err := NewJob(cfg, ".")
	if err != nil {
		t.Fatal(err)
	}
	return job
}

// payRun drives an engine through rounds whose values are scripted; every
// client joins and submits every round. persist, if not nil, receives
// every ActPersist. It stops after the round stopAfter completed (0: run
// to the end) and returns the engine.
func payRun(t *testing.T, e *Engine, n int, values [][]float64, stopAfter int, persist func(ActPersist)) *Engine {
	t.Helper()
	return payRunRows(t, e, n, values, nil, stopAfter, persist)
}

// payRunRows is payRun with client k declaring and submitting rows[k]
// rows (nil: 10 each).
func payRunRows(t *testing.T, e *Engine, n int, values [][]float64, rows []int, stopAfter int, persist func(ActPersist)) *Engine {
	t.Helper()
	samples := func(k int) int64 {
		if rows == nil {
			return 10
		}
		return int64(rows[k])
	}
	e.SetValuer(scriptedValuer{values})
	apply := func(acts []Action) {
		for _, a := range acts {
			if p, ok := a.(ActPersist); ok && persist != nil {
				persist(p)
			}
		}
	}
	for k := range n {
		apply(e.Step(EvJoin{Client: fmt.Sprintf("c%d", k), Samples: samples(k)}))
	}
	for steps := 0; e.Phase() != PhaseDone; steps++ {
		if steps > 10*len(values)+10 {
			t.Fatalf("job did not end: phase %v, round %d", e.Phase(), e.Round())
		}
		task := e.Task()
		if task == nil {
			t.Fatalf("no task open in round %d (phase %v)", e.Round(), e.Phase())
		}
		for _, id := range task.Selected {
			var k int
			fmt.Sscanf(id, "c%d", &k)
			// Updates a radian apart, so that no two clients look like
			// copies of each other (valuation.JobCopyDistance) and the
			// scripted values are what is settled.
			u := []float64{float64(k) * math.Cos(float64(k)), float64(k) * math.Sin(float64(k))}
			apply(e.Step(EvSubmit{Client: id, TaskID: task.ID, Samples: samples(k), Update: u, Digest: [32]byte{byte(k), byte(task.Round)}}))
		}
		if stopAfter > 0 && e.lastCompleted() >= stopAfter {
			break
		}
	}
	return e
}

// inversions counts the pairs of clients whose total value and total
// payout are in opposite order.
func inversions(cs []Contribution) (n int, worst string) {
	for _, a := range cs {
		for _, b := range cs {
			if a.Value > b.Value && a.Payout < b.Payout-1e-9 {
				n++
				worst = fmt.Sprintf("%s (value %.4f) paid %.2f < %s (value %.4f) paid %.2f", a.Client, a.Value, a.Payout, b.Client, b.Value, b.Payout)
			}
		}
	}
	return n, worst
}

// demoValues are the per-round values of `make demo`'s first run (seed 1,
// 8 clients, 20 rounds, influence mode), from its receipts on main at
// 30662cc: round 1 carries nearly all the value.
var demoValues = [][]float64{
	{0.83985, 0.769582, 0.448584, 0.598709, 0.361729, 0.489788, 0.618255, 0.44374},
	{-0.0030955, 0.00270228, 0.00559006, 0.00842378, 0.00770084, -0.00220443, -0.00269836, 0.00184683},
	{-0.00121191, 0.00354529, -0.00156578, 0.00219923, 0.000941282, 0.00161395, -0.000799662, 0.00150878},
	{-0.000366046, 0.00308838, -0.00353555, 0.00114118, -0.000955008, 0.00290893, -0.000164203, 0.00130111},
	{-0.000110062, 0.00349963, -0.00447369, 0.000301763, -0.000763036, 0.00360525, -7.5557e-06, 0.00128804},
	{-3.05045e-06, 0.00318355, -0.00533289, 0.000460762, -0.000362698, 0.00314934, 0.000171707, 0.00133656},
	{0.000124478, 0.00317796, -0.00566707, 0.000152178, -0.000398904, 0.00321627, 0.000259485, 0.00123352},
	{0.000143592, 0.00281817, -0.00589078, 0.000235844, -4.3102e-05, 0.00353343, 0.000418751, 0.00092502},
	{0.000240104, 0.00227321, -0.00571871, 0.000312887, -9.4866e-05, 0.00308567, 0.000552184, 0.000781232},
	{0.000253885, 0.00217778, -0.00628608, 0.000287838, 0.000349794, 0.00342028, 0.000532166, 0.000840217},
	{0.000150799, 0.00212802, -0.0063566, 0.000217398, 0.000851646, 0.00327822, 0.000429852, 0.000880172},
	{0.000265205, 0.00235347, -0.0058592, 0.000257802, -0.000720566, 0.00319477, 0.000515294, 0.00124105},
	{0.000231094, 0.00206105, -0.00585232, 0.00023287, -0.000607286, 0.0031954, 0.000626389, 0.00115119},
	{4.88919e-05, 0.00288658, -0.00652731, 0.000130283, -0.000698759, 0.00358674, 0.000570645, 0.00107825},
	{0.000228858, 0.00213353, -0.00659138, 0.000105923, -0.000195063, 0.00358818, 0.000703416, 0.000890958},
	{7.38948e-05, 0.00206182, -0.00596447, -6.5977e-05, -0.000899317, 0.00371496, 0.000671092, 0.00124006},
	{-9.3225e-05, 0.00245239, -0.00664695, 1.98e-06, 0.000735745, 0.00343283, 0.000472885, 0.00108827},
	{-0.000161062, 0.00190364, -0.0058322, 9.6472e-05, 0.00105566, 0.00311178, 0.000386703, 0.00102807},
	{1.47887e-05, 0.00172685, -0.00573585, 0.000192427, -0.000269151, 0.00303762, 0.000609113, 0.000917353},
	{8.47633e-05, 0.00200092, -0.00617605, 0.000146739, -0.000408183, 0.00314253, 0.000525733, 0.00123946},
}

// TestPayoutFollowsTotalValue reproduces issue 15's inversion: with the
// values of the demo and its job file (budget_per_round 100, no baseline),
// splitting each round's budget within the round paid client-5 (rank 5)
// many times what client-0 (rank 1) got. Pay must follow total value: no
// pair inverted, and the whole budget (100 × 20) paid.
func TestPayoutFollowsTotalValue(t *testing.T) {
	job := payJob(t, 8, 20, func(c *JobConfig) { c.Payment.BudgetPerRound = 100 })
	e := payRun(t, NewEngine(job, FedAvg{Fraction: 1, Min: 8, Mean: meanForTest}, sumSquares{}, []float64{1, -1}), 8, demoValues, 0, nil)
	cs, err := Contributions(job, e.History())
	if err != nil {
		t.Fatal(err)
	}
	var paid float64
	for _, c := range cs {
		t.Logf("%s rank %d value %.5f payout %.2f", c.Client, c.Rank, c.Value, c.Payout)
		paid += c.Payout
	}
	if n, worst := inversions(cs); n > 0 {
		t.Errorf("%d of %d pairs have payout and total value in opposite order, e.g. %s", n, len(cs)*(len(cs)-1)/2, worst)
	}
	if math.Abs(paid-2000) > 1e-6 {
		t.Errorf("paid %v in all, want the budget 100 × 20 = 2000", paid)
	}
}

// TestSettlementNearTieUnequalRows: c1's total value is 0.0001 above c0's,
// but c0 submitted 1.8 times the rows (below the per-row cap's ratio of
// 2, so no value is capped), and its baseline is 1.8 times c1's. Settling
// the escrow by max(V, 0) alone paid c0 20.91 in all and c1 18.83 (the near-tie `tally simulate` inverted on demo-bc8, seed 4);
// the settlement must pay c1 at least what c0 gets, spend the whole
// budget, and leave the rows' baselines as they were.
func TestSettlementNearTieUnequalRows(t *testing.T) {
	job := payJob(t, 3, 1, func(c *JobConfig) { c.Payment.Budget, c.Payment.BaselineShare = 100, 0.1 })
	values := [][]float64{{0.0842, 0.0843, 0.3}}
	e := payRunRows(t, NewEngine(job, FedAvg{Fraction: 1, Min: 3, Mean: meanForTest}, sumSquares{}, []float64{1, -1}), 3, values, []int{18, 10, 10}, 0, nil)
	cs, err := Contributions(job, e.History())
	if err != nil {
		t.Fatal(err)
	}
	var paid float64
	for _, c := range cs {
		t.Logf("%s value %.4f payout %.4f", c.Client, c.Value, c.Payout)
		paid += c.Payout
	}
	if n, worst := inversions(cs); n > 0 {
		t.Errorf("%d pairs paid against their total values, e.g. %s", n, worst)
	}
	if math.Abs(paid-100) > 1e-9 {
		t.Errorf("paid %v in all, want the budget 100", paid)
	}
	h := e.History()
	if b := h[0].Valuation.Payouts; math.Abs(b["c0"]-10*18.0/38) > 1e-12 || math.Abs(b["c1"]-10*10.0/38) > 1e-12 {
		t.Errorf("baselines %v, want c0 %.4f and c1 %.4f (10 split by rows 18:10:10)", b, 10*18.0/38, 10*10.0/38)
	}
	for _, c := range cs {
		if c.Client == "c0" && c.Value != 0.0842 || c.Client == "c1" && c.Value != 0.0843 {
			t.Errorf("%s valued %v, want the scripted value uncapped", c.Client, c.Value)
		}
	}
}

// TestRoundThatMadeModelWorsePaysNoValuePart: in round 2 the values sum
// to −0.2 (the round made the model worse), so c0's +0.4 there earns
// nothing, while c1's −0.6 still counts against it. c0 must be paid as if
// its round-2 value had been 0.
func TestRoundThatMadeModelWorsePaysNoValuePart(t *testing.T) {
	run := func(round2 []float64) []Contribution {
		job := payJob(t, 3, 2, func(c *JobConfig) { c.Payment.BudgetPerRound = 50 })
		e := payRun(t, NewEngine(job, FedAvg{Fraction: 1, Min: 3, Mean: meanForTest}, sumSquares{}, []float64{1, -1}), 3, [][]float64{{0.5, 0.3, 0.2}, round2}, 0, nil)
		cs, err := Contributions(job, e.History())
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	payout := func(cs []Contribution, id string) float64 {
		for _, c := range cs {
			if c.Client == id {
				return c.Payout
			}
		}
		t.Fatalf("no %s in %v", id, cs)
		return 0
	}
	worse := run([]float64{0.4, -0.6, 0})
	zero := run([]float64{0, -0.6, 0})
	if a, b := payout(worse, "c0"), payout(zero, "c0"); math.Abs(a-b) > 1e-9 {
		t.Errorf("c0's +0.4 in a round that made the model worse raised its payout from %.4f to %.4f", b, a)
	}
	// Netting: c1's total is 0.3 − 0.6 < 0, so it gets nothing (no baseline here).
	if p := payout(worse, "c1"); p != 0 {
		t.Errorf("c1, total value −0.3, was paid %v", p)
	}
}

// TestNegativeValuesNetOverTheJob: a client positive in round 1 and more
// negative later has a negative total and receives only the baseline,
// though it was "slightly positive" in the round that paid most under a
// per-round split.
func TestNegativeValuesNetOverTheJob(t *testing.T) {
	job := payJob(t, 3, 3, func(c *JobConfig) { c.Payment.Budget, c.Payment.BaselineShare = 300, 0.1 })
	values := [][]float64{{0.2, 0.1, 0.3}, {-0.15, 0.05, 0.05}, {-0.1, 0.02, 0.03}}
	e := payRun(t, NewEngine(job, FedAvg{Fraction: 1, Min: 3, Mean: meanForTest}, sumSquares{}, []float64{1, -1}), 3, values, 0, nil)
	cs, err := Contributions(job, e.History())
	if err != nil {
		t.Fatal(err)
	}
	baseline := 0.1 * 300 / 3 / 3 * 3 // three rounds of a tenth of 100, split three ways
	for _, c := range cs {
		if c.Client == "c0" && math.Abs(c.Payout-baseline) > 1e-9 {
			t.Errorf("c0 (total value %.3f) was paid %.4f, want only the baseline %.4f", c.Value, c.Payout, baseline)
		}
	}
}

// TestSettlementProperties runs random jobs (clients, rounds, decay,
// baseline share, periods, values of either sign) and checks the rule
// after every persisted step: nothing paid is ever negative (so a
// cumulative payout never falls: no clawback); each settlement splits
// exactly its escrow (paid + unspent = escrow), pays a client with a
// total ≤ 0 nothing, never pays a lower total more (monotone), and its
// totals are the period's netted, decayed values in which a round whose
// values sum to ≤ 0 credits nobody (computed here independently); and at
// the end paid + unspent equals the budget.
func TestSettlementProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 1))
	for trial := range 300 {
		n, rounds := 2+rng.IntN(5), 1+rng.IntN(12)
		decay := []float64{1, 0.8, 0.5 + 0.5*rng.Float64()}[trial%3]
		share := []float64{0, 0.25, rng.Float64()}[rng.IntN(3)]
		period := []int{0, 1 + rng.IntN(rounds)}[rng.IntN(2)]
		budget := 10 + 1000*rng.Float64()
		name := fmt.Sprintf("trial=%d/n=%d/rounds=%d/decay=%.2f/share=%.2f/period=%d", trial, n, rounds, decay, share, period)
		values := make([][]float64, rounds)
		for r := range values {
			values[r] = make([]float64, n)
			scale := math.Pow(10, -3*rng.Float64())
			for k := range values[r] {
				values[r][k] = scale * (rng.NormFloat64() + 0.2)
			}
		}
		job := payJob(t, n, rounds, func(c *JobConfig) {
			c.Payment = PaymentConfig{Budget: budget, PeriodRounds: period, BaselineShare: share, QuotaPerRound: 10, QuotaCapacity: 1e9}
			c.Valuation.Decay = decay
		})
		var paid, unspent float64
		settlements := 0
		check := func(p ActPersist) {
			r := p.Round
			if r == nil {
				return
			}
			if rv := r.Valuation; rv != nil && !r.Failed {
				for id, x := range rv.Payouts {
					if x < 0 {
						t.Fatalf("%s: round %d paid %s %v", name, r.Round, id, x)
					}
					paid += x
				}
				unspent += rv.Unspent
			}
			s := r.Settlement
			if s == nil {
				return
			}
			settlements++
			want := periodTotals(values, s.From, s.Through, decay)
			var sum float64
			for id, x := range s.Payouts {
				var k int
				fmt.Sscanf(id, "c%d", &k)
				if x < 0 {
					t.Fatalf("%s: settlement %d–%d paid %s %v", name, s.From, s.Through, id, x)
				}
				if math.Abs(s.Values[id]-want[k]) > 1e-12 {
					t.Fatalf("%s: settlement %d–%d: %s's total %v, want %v", name, s.From, s.Through, id, s.Values[id], want[k])
				}
				if s.Values[id] <= 0 && x != 0 {
					t.Fatalf("%s: %s with total %v paid %v from escrow", name, id, s.Values[id], x)
				}
				for jd, y := range s.Payouts {
					if s.Values[id] > s.Values[jd] && x < y {
						t.Fatalf("%s: %s (total %v) paid %v < %s (total %v) paid %v", name, id, s.Values[id], x, jd, s.Values[jd], y)
					}
				}
				sum += x
			}
			if !near(sum+s.Unspent, s.Escrow) {
				t.Fatalf("%s: settlement paid %v + unspent %v ≠ escrow %v", name, sum, s.Unspent, s.Escrow)
			}
			paid, unspent = paid+sum, unspent+s.Unspent
		}
		e := payRun(t, NewEngine(job, FedAvg{Fraction: 1, Min: n, Mean: meanForTest}, sumSquares{}, []float64{1, -1}), n, values, 0, check)
		total := budget
		if period > 0 {
			total = budget * float64(rounds) / float64(period)
		}
		if !near(paid+unspent, total) {
			t.Fatalf("%s: paid %v + unspent %v ≠ budget %v", name, paid, unspent, total)
		}
		if wantS := 1; period > 0 {
			wantS = (rounds + period - 1) / period
			if settlements != wantS {
				t.Fatalf("%s: %d settlements, want %d", name, settlements, wantS)
			}
		} else if settlements != wantS {
			t.Fatalf("%s: %d settlements, want %d", name, settlements, wantS)
		}
		cs, err := Contributions(job, e.History())
		if err != nil {
			t.Fatal(err)
		}
		if period == 0 {
			if k, worst := inversions(cs); k > 0 {
				t.Fatalf("%s: %d inversions, e.g. %s", name, k, worst)
			}
		}
	}
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*max(1, math.Abs(a), math.Abs(b)) }

// periodTotals is V over rounds from … through, written out: round r
// counts decay^(through−r), and a round whose values sum to ≤ 0 keeps
// only its negative values.
func periodTotals(values [][]float64, from, through int, decay float64) []float64 {
	out := make([]float64, len(values[0]))
	for r := from; r <= through; r++ {
		var gain float64
		for _, v := range values[r-1] {
			gain += v
		}
		w := math.Pow(decay, float64(through-r))
		for k, v := range values[r-1] {
			if gain <= 0 {
				v = min(v, 0)
			}
			out[k] += w * v
		}
	}
	return out
}

// memPersist is a MemoryStore fed from payRun.
func memPersist(t *testing.T, m *MemoryStore) func(ActPersist) {
	return func(p ActPersist) {
		if err := m.Apply(p); err != nil {
			t.Fatal(err)
		}
	}
}

func settlementsOf(history []RoundRecord) []*Settlement {
	var out []*Settlement
	for _, r := range history {
		if r.Settlement != nil {
			out = append(out, r.Settlement)
		}
	}
	return out
}

// TestSettlementAcrossRestart: a job whose coordinator stops after round
// k (for every k) and resumes from its store settles exactly once, with
// the payouts of an uninterrupted run; a finished job restored does not
// settle again; and a finished job extended (rounds raised) settles the
// added rounds once more, from the budget the first settlement did not
// commit (budget_per_round × 10 more rounds), so the job as extended pays
// exactly its budget.
func TestSettlementAcrossRestart(t *testing.T) {
	const n, rounds = 4, 6
	values := make([][]float64, rounds+4)
	for r := range values {
		values[r] = demoValues[r][:n]
	}
	job := func(rounds int) Job {
		return payJob(t, n, rounds, func(c *JobConfig) { c.Payment.BudgetPerRound, c.Payment.BaselineShare = 100, 0.2 })
	}
	newEngine := func(j Job) *Engine {
		return NewEngine(j, FedAvg{Fraction: 1, Min: n, Mean: meanForTest}, sumSquares{}, []float64{1, -1})
	}
	clean := payRun(t, newEngine(job(rounds)), n, values, 0, nil)
	want, _ := Contributions(job(rounds), clean.History())
	for k := 1; k <= rounds; k++ {
		t.Run(fmt.Sprintf("stop_after=%d", k), func(t *testing.T) {
			store := NewMemoryStore()
			payRun(t, newEngine(job(rounds)), n, values, k, memPersist(t, store))
			for restart := range 2 { // the second restores a finished job
				snap, _ := store.Load()
				e := newEngine(job(rounds))
				if err := e.Restore(snap); err != nil {
					t.Fatal(err)
				}
				if e.Phase() != PhaseDone {
					payRun(t, e, n, values, 0, memPersist(t, store))
				} else if restart == 0 && k < rounds {
					t.Fatalf("restored after round %d of %d as done", k, rounds)
				}
			}
			snap, _ := store.Load()
			if s := settlementsOf(snap.Rounds); len(s) != 1 || s[0].From != 1 || s[0].Through != rounds {
				t.Fatalf("settlements %+v, want one of rounds 1–%d", s, rounds)
			}
			got, _ := Contributions(job(rounds), snap.Rounds)
			for i := range want {
				if got[i].Client != want[i].Client || !near(got[i].Payout, want[i].Payout) || got[i].Quota != want[i].Quota {
					t.Errorf("%s paid %v (quota %v) after a restart, %s %v (quota %v) without", got[i].Client, got[i].Payout, got[i].Quota, want[i].Client, want[i].Payout, want[i].Quota)
				}
			}
		})
	}
	t.Run("extended", func(t *testing.T) {
		store := NewMemoryStore()
		payRun(t, newEngine(job(rounds)), n, values, 0, memPersist(t, store))
		snap, _ := store.Load()
		e := newEngine(job(rounds + 4))
		if err := e.Restore(snap); err != nil {
			t.Fatal(err)
		}
		payRun(t, e, n, values, 0, memPersist(t, store))
		snap, _ = store.Load()
		s := settlementsOf(snap.Rounds)
		if len(s) != 2 || s[1].From != rounds+1 || s[1].Through != rounds+4 || !near(s[1].Budget, 400) {
			t.Fatalf("settlements %+v, want a second one of rounds %d–%d committing 400", s, rounds+1, rounds+4)
		}
		cs, _ := Contributions(job(rounds+4), snap.Rounds)
		var paid, unspent float64
		for _, c := range cs {
			paid += c.Payout
		}
		for _, r := range snap.Rounds {
			if r.Valuation != nil && !r.Failed {
				unspent += r.Valuation.Unspent
			}
			if r.Settlement != nil {
				unspent += r.Settlement.Unspent
			}
		}
		if !near(paid+unspent, 100*(rounds+4)) {
			t.Errorf("the extended job paid %v, %v unspent, want its budget %d in all", paid, unspent, 100*(rounds+4))
		}
	})
}

// TestStoppedJobSettlesWhatItRan: a job that stops on a failed round
// settles the rounds it completed, committing only their share of the
// budget, with the failed attempt's record.
func TestStoppedJobSettlesWhatItRan(t *testing.T) {
	const n = 3
	job := payJob(t, n, 10, func(c *JobConfig) {
		c.Payment.Budget, c.Payment.BaselineShare = 1000, 0.1
		c.OnRoundFailure = "stop"
	})
	e := NewEngine(job, FedAvg{Fraction: 1, Min: n, Mean: meanForTest}, sumSquares{}, []float64{1, -1})
	values := [][]float64{{0.3, 0.2, -0.1}, {0.01, 0.02, 0.0}, {0.001, -0.002, 0.003}}
	store := NewMemoryStore()
	payRun(t, e, n, values, 3, memPersist(t, store))
	for i := 0; e.Phase() != PhaseDone && i < 100; i++ {
		for _, a := range e.Step(EvTick{}) {
			if p, ok := a.(ActPersist); ok {
				memPersist(t, store)(p)
			}
		}
	}
	snap, _ := store.Load()
	s := settlementsOf(snap.Rounds)
	if len(s) != 1 || s[0].Through != 3 || s[0].Done != 3 || !near(s[0].Budget, 300) || !near(s[0].Escrow, 270) {
		t.Fatalf("settlements %+v, want one of rounds 1–3 committing 300 (escrow 270)", s)
	}
	last := snap.Rounds[len(snap.Rounds)-1]
	if !last.Failed || last.Settlement == nil {
		t.Fatalf("the settlement is not on the failed attempt's record: %+v", last)
	}
}
