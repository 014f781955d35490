package experiments

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/model"
	"github.com/tallyfl/tally/valuation"
)

// Options configures Run.
type Options struct {
	// Methods and Modes are valued on every round (nil: each scenario's own
	// list or DefaultMethods, and every mode).
	Methods []Method
	Modes   []string
	// Repeats is the number of seeds per scenario (0: the scenario's list).
	Repeats int
	// ExportGames, if set, is a directory that receives every round's games
	// as CSV: one row per coalition evaluated.
	ExportGames string
	// Progress receives one line per FedAvg run and per (mode, method), with
	// elapsed time; nil discards them.
	Progress io.Writer
}

// SeedRun is everything one scenario and seed produced.
type SeedRun struct {
	Scenario string
	Seed     uint64
	// Clients describes the base run's clients: corruption (text form) and
	// weight.
	Corruption []string
	Weights    []float64
	// Corrupted marks the clients a valuation should rank low (label flips,
	// feature noise, free riders), for the detection AUC.
	Corrupted []bool
	// Duplicates pairs each duplicate with its original.
	Duplicates [][2]int
	// FreeRiders lists the free riders (any kind).
	FreeRiders []int
	Reference  Valued
	Runs       []Valued
	// The run without copies, if the scenario has duplicates: the same
	// clients with the same rows but no copy (AloneOf[i] is client i's
	// index there, −1 for a copy), and that run's reference and methods,
	// for the duplicate pair's payout against the original's alone.
	AloneOf   []int
	AloneRef  *Valued
	AloneRuns []Valued
	// The Sybil run, if the scenario has one: the split client, the
	// identities holding its data, and that run's reference and methods.
	SybilClient int
	Sybils      []int
	SybilRef    *Valued
	SybilRuns   []Valued
	// TestAccuracy is the final global model's accuracy on the test set.
	TestAccuracy float64
	Train        time.Duration
}

// Metrics are one (scenario, seed, mode, method)'s scores against the
// reference.
type Metrics struct {
	Scenario, Mode, Method string
	Seed                   uint64
	Spearman, Kendall      float64
	Pearson, L2            float64
	AUC, Symmetry          float64
	SybilGain              float64
	// Payout columns, under the job's rules (JobPay): Spearman of the
	// honest clients' payouts against the reference totals, the largest
	// free rider's payout in baselines, the duplicate pair's payout over
	// the original's alone, the Sybil's gain of the budget.
	PaySpearman, FreeRiderPay float64
	DuplicatePay, SybilPay    float64
	Evaluations               int
	// ScalarsPerClientRound is the privacy cost beside the vectors: the
	// scalars decrypted per client and round (ScalarDecryptions over
	// rounds × clients), each a function of one client's update.
	ScalarsPerClientRound float64
	Wall                  time.Duration
	Cost
	Err string
}

// seedsFor returns the scenario's seeds for repeats (0: all listed).
func seedsFor(sc Scenario, repeats int) []uint64 {
	if repeats <= 0 {
		return sc.Seeds
	}
	seeds := append([]uint64(nil), sc.Seeds[:min(repeats, len(sc.Seeds))]...)
	for next := sc.Seeds[len(sc.Seeds)-1] + 1; len(seeds) < repeats; next++ {
		seeds = append(seeds, next)
	}
	return seeds
}

// Run runs every scenario for its seeds and returns the runs in order.
func Run(ctx context.Context, scenarios []Scenario, opt Options) ([]SeedRun, error) {
	progress := opt.Progress
	if progress == nil {
		progress = io.Discard
	}
	modes := opt.Modes
	if len(modes) == 0 {
		modes = Modes()
	}
	total := 0
	for _, sc := range scenarios {
		total += len(seedsFor(sc, opt.Repeats))
	}
	var out []SeedRun
	start := time.Now()
	k := 0
	for _, sc := range scenarios {
		methods := opt.Methods
		if len(methods) == 0 {
			if len(sc.Methods) > 0 {
				methods, _ = ParseMethods(sc.Methods) // validated on load
			} else {
				methods = DefaultMethods()
			}
		}
		for _, seed := range seedsFor(sc, opt.Repeats) {
			k++
			tag := fmt.Sprintf("[%d/%d] %s seed=%d", k, total, sc.Name, seed)
			sr, err := runSeed(ctx, sc, seed, methods, modes, opt.ExportGames, func(line string) {
				fmt.Fprintf(progress, "%s %s (elapsed %s)\n", tag, line, time.Since(start).Round(100*time.Millisecond))
			})
			if err != nil {
				return out, fmt.Errorf("%s seed %d: %w", sc.Name, seed, err)
			}
			out = append(out, sr)
		}
	}
	return out, nil
}

// runSeed trains and values one scenario and seed (and its Sybil run, and
// its run without copies).
func runSeed(ctx context.Context, sc Scenario, seed uint64, methods []Method, modes []string, export string, say func(string)) (SeedRun, error) {
	sr := SeedRun{Scenario: sc.Name, Seed: seed}
	one := func(kind string, fed *federation) (*trace, Valued, []Valued, error) {
		t0 := time.Now()
		t, err := runFedAvg(sc, seed, fed)
		if err != nil {
			return nil, Valued{}, nil, err
		}
		train := time.Since(t0)
		sr.Train += train
		say(fmt.Sprintf("%s: fedavg %d rounds, %d clients, test accuracy %.3f, %s", kind, sc.Rounds, len(fed.clients), t.test.Accuracy, train.Round(time.Millisecond)))
		var games func(int, *roundGame) error
		if export != "" {
			dir := filepath.Join(export, sc.Name, fmt.Sprintf("seed-%d", seed), kind)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, Valued{}, nil, err
			}
			games = func(r int, rg *roundGame) error { return exportGame(dir, r, rg) }
		}
		ref, runs, err := valueTrace(ctx, sc, seed, t, methods, modes, func(mode, method string, wall time.Duration) {
			say(fmt.Sprintf("%s: %-9s %-16s %s", kind, mode, method, wall.Round(time.Millisecond)))
		}, games)
		// Every run pays its baseline by the clients' rows, as the
		// coordinator does.
		ref.Weights = t.fed.weights
		for i := range runs {
			runs[i].Weights = t.fed.weights
		}
		return t, ref, runs, err
	}
	fed, err := newFederation(sc, seed, false)
	if err != nil {
		return sr, err
	}
	t, ref, runs, err := one("base", fed)
	if err != nil {
		return sr, err
	}
	sr.Reference, sr.Runs, sr.TestAccuracy = ref, runs, t.test.Accuracy
	sr.Weights = t.fed.weights
	for i, c := range t.fed.corruptions {
		sr.Corruption = append(sr.Corruption, corruptionText(c))
		sr.Corrupted = append(sr.Corrupted, corrupted(c))
		if c.Kind == dataset.CorruptDuplicate {
			sr.Duplicates = append(sr.Duplicates, [2]int{i, c.Of})
		}
		if c.IsFreeRider() {
			sr.FreeRiders = append(sr.FreeRiders, i)
		}
	}
	if len(sr.Duplicates) > 0 {
		alone, err := newFederation(sc, seed, false)
		if err != nil {
			return sr, err
		}
		sr.AloneOf = withoutCopies(alone)
		_, aref, aruns, err := one("alone", alone)
		if err != nil {
			return sr, err
		}
		sr.AloneRef, sr.AloneRuns = &aref, aruns
	}
	if sc.Sybil != nil {
		split, err := newFederation(sc, seed, true)
		if err != nil {
			return sr, err
		}
		ts, sref, sruns, err := one("sybil", split)
		if err != nil {
			return sr, err
		}
		sr.SybilClient, sr.Sybils = sc.Sybil.Client, ts.fed.sybils
		sr.SybilRef, sr.SybilRuns = &sref, sruns
	}
	return sr, nil
}

// withoutCopies drops fed's duplicates, keeping every other client with
// its rows, and returns where each of the original clients went (−1 for a
// dropped copy).
func withoutCopies(fed *federation) []int {
	at := make([]int, len(fed.clients))
	var clients []model.Examples
	var corr []dataset.Corruption
	var ws []float64
	for i, c := range fed.corruptions {
		if c.Kind == dataset.CorruptDuplicate {
			at[i] = -1
			continue
		}
		at[i] = len(clients)
		clients, corr, ws = append(clients, fed.clients[i]), append(corr, c), append(ws, fed.weights[i])
	}
	fed.clients, fed.corruptions, fed.weights = clients, corr, ws
	return at
}

func corruptionText(c dataset.Corruption) string {
	if c.Kind == "" {
		return "none"
	}
	return c.String()
}

// corrupted reports whether c degrades the client's contribution.
func corrupted(c dataset.Corruption) bool {
	switch c.Kind {
	case dataset.CorruptLabelFlip:
		return c.Rate > 0
	case dataset.CorruptFeatureNoise:
		return c.Sigma > 0
	case dataset.CorruptFreeRider:
		return true
	}
	return false
}

// Evaluate scores every (mode, method) of sr against its reference.
func Evaluate(sr SeedRun) []Metrics {
	var out []Metrics
	all := append([]Valued{sr.Reference}, sr.Runs...)
	honest := make([]bool, len(sr.Corruption))
	for i, c := range sr.Corruption {
		honest[i] = c == "none"
	}
	pays := func(v Valued) Pay {
		p, err := JobPay(v, PayBaselineShare)
		if err != nil {
			n := len(v.Totals)
			return Pay{Values: nanSlice(n), Payouts: nanSlice(n), Baseline: nanSlice(n)}
		}
		return p
	}
	for k, v := range all {
		pay := pays(v)
		m := Metrics{
			Scenario: sr.Scenario, Seed: sr.Seed, Mode: v.Mode, Method: v.Method,
			Spearman:     Spearman(v.Totals, sr.Reference.Totals),
			Kendall:      KendallTau(v.Totals, sr.Reference.Totals),
			Pearson:      Pearson(v.Totals, sr.Reference.Totals),
			L2:           NormL2(v.Totals, sr.Reference.Totals),
			AUC:          DetectionAUC(v.Totals, sr.Corrupted),
			Symmetry:     SymmetryError(v.Totals, sr.Duplicates),
			SybilGain:    math.NaN(),
			PaySpearman:  PaySpearman(pay.Payouts, sr.Reference.Totals, honest),
			FreeRiderPay: FreeRiderPay(pay, sr.FreeRiders),
			DuplicatePay: math.NaN(),
			SybilPay:     math.NaN(),
			Evaluations:  v.Evaluations, Wall: v.Wall, Cost: v.Cost, Err: v.Err,
		}
		if n, r := len(sr.Corruption), len(v.Rounds); n > 0 && r > 0 {
			m.ScalarsPerClientRound = float64(v.ScalarDecryptions) / float64(n*r)
		}
		if v.Method == valuation.MethodCGSV {
			// Cosines are not in utility units: only ranks compare.
			m.Pearson, m.L2 = math.NaN(), math.NaN()
		}
		if sr.SybilRef != nil {
			split := *sr.SybilRef
			if k > 0 {
				split = sr.SybilRuns[k-1]
			}
			m.SybilGain = SybilGain(v.Totals, sr.SybilClient, split.Totals, sr.Sybils)
			m.SybilPay = SybilPay(pay.Payouts, sr.SybilClient, pays(split).Payouts, sr.Sybils)
		}
		if sr.AloneRef != nil {
			alone := *sr.AloneRef
			if k > 0 {
				alone = sr.AloneRuns[k-1]
			}
			m.DuplicatePay = DuplicatePay(pay.Payouts, pays(alone).Payouts, sr.Duplicates, sr.AloneOf)
		}
		out = append(out, m)
	}
	return out
}

// fmtFloat writes x in the shortest form that parses back to the same bits.
func fmtFloat(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }

// fmtMetric writes a metric with 6 significant digits ("" for NaN).
func fmtMetric(x float64) string {
	if math.IsNaN(x) {
		return ""
	}
	return strconv.FormatFloat(x, 'g', 6, 64)
}

// WriteValues writes every client's accumulated value per (mode, method),
// beside the reference: values.csv. It holds no timing, so the same seed
// gives the same file.
func WriteValues(w io.Writer, runs []SeedRun) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"scenario", "seed", "run", "mode", "method", "client", "corruption", "weight", "value", "reference", "stderr", "credited", "payout"})
	for _, sr := range runs {
		emit := func(run string, ref Valued, vs []Valued, corr []string, weights []float64) {
			for _, v := range append([]Valued{ref}, vs...) {
				// The share of a budget of 1 under the job's rules
				// (JobPay), beside the credited total it settles by.
				p, err := JobPay(v, PayBaselineShare)
				if err != nil {
					p = Pay{Values: nanSlice(len(v.Totals)), Payouts: nanSlice(len(v.Totals))}
				}
				for i, x := range v.Totals {
					c := "none"
					if i < len(corr) {
						c = corr[i]
					}
					se := 0.0
					for r := range v.StdErr {
						if v.StdErr[r] != nil {
							se += v.StdErr[r][i] * v.StdErr[r][i]
						}
					}
					cw.Write([]string{sr.Scenario, strconv.FormatUint(sr.Seed, 10), run, v.Mode, v.Method, strconv.Itoa(i), c,
						fmtFloat(weights[i]), fmtFloat(x), fmtFloat(ref.Totals[i]), fmtFloat(math.Sqrt(se)), fmtFloat(p.Values[i]), fmtFloat(p.Payouts[i])})
				}
			}
		}
		emit("base", sr.Reference, sr.Runs, sr.Corruption, sr.Weights)
		if sr.SybilRef != nil {
			corr := make([]string, len(sr.SybilRef.Totals))
			ws := make([]float64, len(corr))
			for i := range corr {
				corr[i] = "none"
				if i < len(sr.Corruption) {
					corr[i] = sr.Corruption[i]
				}
			}
			for _, i := range sr.Sybils {
				corr[i] = fmt.Sprintf("sybil-of:%d", sr.SybilClient)
			}
			// Weights of the split run are not kept; report the base run's
			// for the clients that did not change.
			for i := range ws {
				if i < len(sr.Weights) {
					ws[i] = sr.Weights[i]
				}
			}
			emit("sybil", *sr.SybilRef, sr.SybilRuns, corr, ws)
		}
		if sr.AloneRef != nil {
			var corr []string
			var ws []float64
			for i, at := range sr.AloneOf {
				if at >= 0 {
					corr, ws = append(corr, sr.Corruption[i]), append(ws, sr.Weights[i])
				}
			}
			emit("alone", *sr.AloneRef, sr.AloneRuns, corr, ws)
		}
	}
	cw.Flush()
	return cw.Error()
}

// WriteRounds writes every round's value of every client per (mode,
// method): rounds.csv, in full precision.
func WriteRounds(w io.Writer, runs []SeedRun) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"scenario", "seed", "run", "round", "mode", "method", "client", "value", "stderr"})
	for _, sr := range runs {
		emit := func(run string, vs []Valued) {
			for _, v := range vs {
				for r := range v.Rounds {
					for i, x := range v.Rounds[r] {
						cw.Write([]string{sr.Scenario, strconv.FormatUint(sr.Seed, 10), run, strconv.Itoa(r), v.Mode, v.Method,
							strconv.Itoa(i), fmtFloat(x), fmtFloat(v.StdErr[r][i])})
					}
				}
			}
		}
		emit("base", append([]Valued{sr.Reference}, sr.Runs...))
		if sr.SybilRef != nil {
			emit("sybil", append([]Valued{*sr.SybilRef}, sr.SybilRuns...))
		}
	}
	cw.Flush()
	return cw.Error()
}

// metricColumns are the fidelity columns of runs.csv and summary.csv, in
// order, with their getters.
var metricColumns = []struct {
	name string
	get  func(Metrics) float64
}{
	{"spearman", func(m Metrics) float64 { return m.Spearman }},
	{"kendall", func(m Metrics) float64 { return m.Kendall }},
	{"pearson", func(m Metrics) float64 { return m.Pearson }},
	{"l2", func(m Metrics) float64 { return m.L2 }},
	{"auc", func(m Metrics) float64 { return m.AUC }},
	{"symmetry", func(m Metrics) float64 { return m.Symmetry }},
	{"sybil_gain", func(m Metrics) float64 { return m.SybilGain }},
	{"pay_spearman", func(m Metrics) float64 { return m.PaySpearman }},
	{"freerider_pay", func(m Metrics) float64 { return m.FreeRiderPay }},
	{"duplicate_pay", func(m Metrics) float64 { return m.DuplicatePay }},
	{"sybil_pay", func(m Metrics) float64 { return m.SybilPay }},
	{"evaluations", func(m Metrics) float64 { return float64(m.Evaluations) }},
	{"vector_decryptions", func(m Metrics) float64 { return float64(m.VectorDecryptions) }},
	{"scalar_decryptions", func(m Metrics) float64 { return float64(m.ScalarDecryptions) }},
	{"scalars_per_client_round", func(m Metrics) float64 { return m.ScalarsPerClientRound }},
	{"min_contributors", func(m Metrics) float64 { return float64(m.MinContributors) }},
	{"he_adds", func(m Metrics) float64 { return float64(m.HEAdds) }},
	{"he_mults", func(m Metrics) float64 { return float64(m.HEMults) }},
	{"dec_shares", func(m Metrics) float64 { return float64(m.DecShares) }},
	{"dec_combines", func(m Metrics) float64 { return float64(m.DecCombines) }},
	{"wall_ms", func(m Metrics) float64 { return float64(m.Wall) / 1e6 }},
}

// WriteMetrics writes one row per (scenario, seed, mode, method): runs.csv.
// Only the wall_ms column depends on the machine.
func WriteMetrics(w io.Writer, ms []Metrics) error {
	cw := csv.NewWriter(w)
	head := []string{"scenario", "seed", "mode", "method"}
	for _, c := range metricColumns {
		head = append(head, c.name)
	}
	cw.Write(append(head, "error"))
	for _, m := range ms {
		row := []string{m.Scenario, strconv.FormatUint(m.Seed, 10), m.Mode, m.Method}
		for _, c := range metricColumns {
			row = append(row, fmtMetric(c.get(m)))
		}
		cw.Write(append(row, strings.ReplaceAll(m.Err, "\n", " ")))
	}
	cw.Flush()
	return cw.Error()
}
