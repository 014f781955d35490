package experiments

import (
	"bytes"
	"context"
	"encoding/csv"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tallyfl/tally/valuation"
)

// load reads a shipped scenario and shortens it for a test.
func load(t *testing.T, name string, rounds int, seeds ...uint64) Scenario {
	t.Helper()
	sc, err := LoadScenario(filepath.Join("scenarios", name+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if rounds > 0 {
		sc.Rounds = rounds
	}
	if len(seeds) > 0 {
		sc.Seeds = seeds
	}
	return sc
}

func mustMethods(t *testing.T, s ...string) []Method {
	t.Helper()
	ms, err := ParseMethods(s)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func run(t *testing.T, sc Scenario, opt Options) []SeedRun {
	t.Helper()
	runs, err := Run(context.Background(), []Scenario{sc}, opt)
	if err != nil {
		t.Fatal(err)
	}
	return runs
}

func find(t *testing.T, sr SeedRun, mode, method string) Valued {
	t.Helper()
	for _, v := range sr.Runs {
		if v.Mode == mode && v.Method == method {
			if v.Err != "" {
				t.Fatalf("%s %s: %s", mode, method, v.Err)
			}
			return v
		}
	}
	t.Fatalf("no %s %s in the run", mode, method)
	return Valued{}
}

// TestScenariosLoad checks that every shipped scenario, the free-rider
// sweep's too, parses and validates.
func TestScenariosLoad(t *testing.T) {
	paths, err := filepath.Glob("scenarios/*.yaml")
	sweep, _ := filepath.Glob("scenarios/free-rider-sweep/*.yaml")
	paths = append(paths, sweep...)
	if err != nil || len(paths) == 0 {
		t.Fatalf("no scenarios: %v", err)
	}
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			if _, err := LoadScenario(p); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestBadScenarios checks that invalid files fail with every problem named.
func TestBadScenarios(t *testing.T) {
	paths, _ := filepath.Glob("testdata/*.bad.yaml")
	if len(paths) == 0 {
		t.Fatal("no bad scenarios in testdata")
	}
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			want, err := os.ReadFile(strings.TrimSuffix(p, ".yaml") + ".err")
			if err != nil {
				t.Fatal(err)
			}
			_, err = LoadScenario(p)
			if err == nil {
				t.Fatal("loaded")
			}
			for _, line := range strings.Split(strings.TrimSpace(string(want)), "\n") {
				if !strings.Contains(err.Error(), line) {
					t.Errorf("error %q\ndoes not contain %q", err, line)
				}
			}
		})
	}
}

// TestLabelNoiseValuesFall runs the label-noise scenario (clients 0…4 with
// 0, 5, 10, 15, 20% of labels flipped) and asserts Ghorbani & Zou's
// expectation on exact Shapley: on every seed the value falls as the noise
// rises, measured as a Spearman correlation between noise and value of at
// most −0.9 (at most one adjacent pair out of order: five flipped labels on
// 68 rows can be outweighed by which rows they are), and the clean client is
// worth more than the noisiest on every seed.
func TestLabelNoiseValuesFall(t *testing.T) {
	sc := load(t, "label-noise-bc5", 10, 1, 2, 3)
	runs := run(t, sc, Options{Methods: mustMethods(t, "exact-shapley"), Modes: []string{ModePlain}})
	noise := []float64{0, 0.05, 0.1, 0.15, 0.2}
	for _, sr := range runs {
		v := find(t, sr, ModePlain, "exact-shapley").Totals
		if rho := Spearman(noise, v); !(rho <= -0.9) {
			t.Errorf("seed %d: Spearman(noise, value) = %.2f, want ≤ −0.9; values %.3f", sr.Seed, rho, v)
		}
		if !(v[0] > v[4]) {
			t.Errorf("seed %d: clean client %.3f not above the 20%%-noise client %.3f", sr.Seed, v[0], v[4])
		}
	}
}

// TestDuplicatesSymmetric: client 4 duplicates client 0 and, training on the
// same rows with the same shuffles, sends a bit-identical update. Exact
// Shapley then pays both the same up to rounding: the FedAvg of a coalition
// adds its players in index order, so swapping the two copies can change the
// sum's last bit, and the utility by ~1e-16 per coalition; 1e-9 of the
// values' scale leaves six orders of magnitude for accumulation over 2^5
// coalitions and 10 rounds. Leave-one-out pays each copy what removing it
// alone changes, the known failure: both copies get less than a third of
// their Shapley value.
func TestDuplicatesSymmetric(t *testing.T) {
	sc := load(t, "duplicates-bc5", 10, 1, 2)
	runs := run(t, sc, Options{Methods: mustMethods(t, "exact-shapley", "loo"), Modes: []string{ModePlain}})
	for _, sr := range runs {
		v := find(t, sr, ModePlain, "exact-shapley").Totals
		if e := SymmetryError(v, sr.Duplicates); !(e <= 1e-9) {
			t.Errorf("seed %d: symmetry error %.3g between duplicates (values %v)", sr.Seed, e, v)
		}
		loo := find(t, sr, ModePlain, "loo").Totals
		if !(math.Abs(loo[0]) < math.Abs(v[0])/3 && math.Abs(loo[4]) < math.Abs(v[4])/3) {
			t.Errorf("seed %d: LOO pays the duplicates %.4f and %.4f against Shapley's %.4f", sr.Seed, loo[0], loo[4], v[0])
		}
	}
}

// TestFreeRiders asserts what exact Shapley with the utility −validation
// loss pays the three free riders of free-riders-bc8 (clients 5 zero, 6
// random with the honest mean norm, 7 echo of the last global change), each
// claiming the rows of an honest iid shard as its FedAvg weight, on seeds
// 1–10.
//
// A free rider joining coalition S shrinks S's step by N_S/(N_S + n) and
// adds its own update with weight n/(N_S + n); to S = ∅ it contributes its
// update alone. The scenario's plain small-step SGD keeps every coalition's
// step short of the validation optimum along its line, so:
//
//   - zero: every marginal contribution is the loss of a shrunk step, ≤ 0,
//     so its value is ≤ 0 in every round, not only in total;
//   - random: the same shrinking plus a term gᵀr of random sign whose size
//     is about 1/√d of it (d = 62 parameters); its total is ≤ 0;
//   - echo: in round 0 there is no global change yet and it sends zeros, so
//     it is a copy of the zero free rider and paid the same; from round 1 on
//     it replays a step that still points downhill and is paid like server
//     momentum, > 0 in every round. This is the known limit of the
//     expectation "free riders get ≤ 0" (Lin et al. 2019's delta-weights
//     free rider is built to pass for honest): asserted so that the README's
//     statement stays true, with the bound that its total is still below
//     the honest clients' mean.
//
// Zero and random free riders are also valued below every honest client.
// Measured on seeds 1–20 at learning rates 0.05, 0.1 and 0.2 (README, "Free
// riders"), none of these fails; with momentum 0.9 the zero free rider is
// positive on 6 of 20 seeds, because shrinking an overshooting step helps.
func TestFreeRiders(t *testing.T) {
	sc := load(t, "free-riders-bc8", 10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
	runs := run(t, sc, Options{Methods: mustMethods(t, "exact-shapley"), Modes: []string{ModePlain}})
	for _, sr := range runs {
		val := find(t, sr, ModePlain, "exact-shapley")
		v := val.Totals
		for r, row := range val.Rounds {
			// The line-search utility, capped at each coalition's FedAvg
			// step: a zero update, and an echo of the previous global change
			// (projected off every update, so a zero too), can only shorten
			// a coalition's cap: ≤ 0 in every round (under the FedAvg step
			// the echo was paid > 0 in every round after the first).
			if !(row[5] <= 0) {
				t.Errorf("seed %d round %d: zero free rider valued %.4g > 0", sr.Seed, r, row[5])
			}
			if !(row[7] <= 0) {
				t.Errorf("seed %d round %d: echo free rider valued %.4g > 0", sr.Seed, r, row[7])
			}
		}
		if !(v[6] <= 0) {
			t.Errorf("seed %d: random free rider valued %.4g > 0", sr.Seed, v[6])
		}
		mean := 0.0
		for h := range 5 {
			mean += v[h] / 5
			for _, fr := range []int{5, 6} {
				if !(v[h] > v[fr]) {
					t.Errorf("seed %d: honest client %d (%.4g) not above free rider %d, %s (%.4g)", sr.Seed, h, v[h], fr, sr.Corruption[fr], v[fr])
				}
			}
		}
		if !(v[7] < mean) {
			t.Errorf("seed %d: echo free rider %.4g not below the honest mean %.4g", sr.Seed, v[7], mean)
		}
	}
}

// tables renders the deterministic tables of runs; runs.csv loses its
// wall_ms column, the only one that depends on the machine.
func tables(t *testing.T, runs []SeedRun) string {
	t.Helper()
	var b bytes.Buffer
	if err := WriteValues(&b, runs); err != nil {
		t.Fatal(err)
	}
	if err := WriteRounds(&b, runs); err != nil {
		t.Fatal(err)
	}
	var ms []Metrics
	for _, r := range runs {
		ms = append(ms, Evaluate(r)...)
	}
	var m bytes.Buffer
	if err := WriteMetrics(&m, ms); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&m).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	wall := -1
	for k, h := range rows[0] {
		if h == "wall_ms" {
			wall = k
		}
	}
	if wall < 0 {
		t.Fatal("runs.csv has no wall_ms column")
	}
	for _, row := range rows {
		b.WriteString(strings.Join(append(append([]string{}, row[:wall]...), row[wall+1:]...), ",") + "\n")
	}
	return b.String()
}

// TestSameSeedSameTables runs a scenario with every mode and a sampled
// method twice and compares the tables byte for byte, and checks that
// another seed changes them.
func TestSameSeedSameTables(t *testing.T) {
	sc := load(t, "sybil-bc5", 3, 4)
	opt := Options{Methods: mustMethods(t, "exact-shapley", "tmc@4", "gtg@4", "banzhaf@4", "cgsv", "influence")}
	a, b := tables(t, run(t, sc, opt)), tables(t, run(t, sc, opt))
	if a != b {
		t.Fatal("the same seed gave different tables")
	}
	sc.Seeds = []uint64{5}
	if c := tables(t, run(t, sc, opt)); c == a {
		t.Fatal("another seed gave the same tables")
	}
}

// TestExportedGameShapley exports the games of an 8-client scenario and
// recomputes exact Shapley from a round's CSV alone, by the subset formula
// φ_i = Σ_{S∌i} |S|!(n−|S|−1)!/n! · (U(S∪i) − U(S)), written here
// independently of the library; it must equal the library's values, as
// written to rounds.csv, within 1e-9, once capped per row as the library
// caps them (valuation.CapPerWeight).
func TestExportedGameShapley(t *testing.T) {
	sc := load(t, "free-riders-bc8", 2, 3)
	dir := t.TempDir()
	runs := run(t, sc, Options{Methods: mustMethods(t, "exact-shapley", "tmc@4"), Modes: []string{ModePlain, ModeGroups}, ExportGames: dir})
	var b bytes.Buffer
	if err := WriteRounds(&b, runs); err != nil {
		t.Fatal(err)
	}
	lib := map[[2]int]float64{} // (round, client) → value
	rows, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows[1:] {
		if r[2] == "base" && r[4] == ModePlain && r[5] == "exact-shapley" {
			round, _ := strconv.Atoi(r[3])
			client, _ := strconv.Atoi(r[6])
			lib[[2]int{round, client}], _ = strconv.ParseFloat(r[7], 64)
		}
	}
	for round := range 2 {
		path := filepath.Join(dir, sc.Name, "seed-3", "base", "round-0"+strconv.Itoa(round)+"-plain.csv")
		phi := shapleyFromCSV(t, path)
		if len(phi) != 8 {
			t.Fatalf("%s: %d players, want 8", path, len(phi))
		}
		// The library then caps value per row (valuation.CapPerWeight).
		phi, err = valuation.CapPerWeight(phi, runs[0].Weights)
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range phi {
			got, ok := lib[[2]int{round, i}]
			if !ok || math.Abs(got-want) > 1e-9 {
				t.Errorf("round %d client %d: library %.12g, from the CSV %.12g", round, i, got, want)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, sc.Name, "seed-3", "base", "round-01-groups.csv")); err != nil {
		t.Errorf("groups game not exported: %v", err)
	}
}

// shapleyFromCSV reads an exported game (bitmask,players,clients,utility)
// and computes exact Shapley values by the subset formula.
func shapleyFromCSV(t *testing.T, path string) []float64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	u := map[uint64]float64{}
	var all uint64
	for _, r := range rows[1:] {
		mask, err1 := strconv.ParseUint(r[0], 10, 64)
		val, err2 := strconv.ParseFloat(r[3], 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: bad row %v", path, r)
		}
		u[mask] = val
		all |= mask
	}
	n := bits.Len64(all)
	if len(u) != 1<<n {
		t.Fatalf("%s: %d coalitions, want all %d", path, len(u), 1<<n)
	}
	fact := func(k int) float64 {
		f := 1.0
		for j := 2; j <= k; j++ {
			f *= float64(j)
		}
		return f
	}
	phi := make([]float64, n)
	for i := range n {
		for s := uint64(0); s < 1<<n; s++ {
			if s&(1<<i) != 0 {
				continue
			}
			k := bits.OnesCount64(s)
			phi[i] += fact(k) * fact(n-k-1) / fact(n) * (u[s|1<<i] - u[s])
		}
	}
	return phi
}

// TestDemoRandomFreeRider: in make demo's second run (demo-corrupt-bc8:
// client 6 flips half its labels, client 7 sends a random direction of the
// honest mean norm; tally simulate's momentum training) plaintext exact
// Shapley under the line-search utility must not pay the random free rider
// a positive total (issue 15 item 2: an update that carries nothing the
// coordinator could not draw itself earns nothing). Before updates inside
// the random-direction band around the validation gradient counted as
// zero (valuation.FederatedOptions.Signal), its round 0 value was positive
// on seeds 5, 6, 7 and 9 (in round 0 the server knows no previous step,
// and a random direction line-searched alone is never worse than the empty
// coalition) and its total +0.0153 on seed 5, +0.0031 on seed 6; with the
// band (in round 0, where nothing is known), seeds 1–10 measured −0.0824 to
// −0.0163. The default seeds are the two that failed; TALLY_FR_SEEDS=1,2,…
// picks others.
func TestDemoRandomFreeRider(t *testing.T) {
	sc, err := LoadScenario(filepath.Join("acceptance", "scenarios", "demo-corrupt-bc8.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	sc.Seeds = []uint64{5, 6}
	if s := os.Getenv("TALLY_FR_SEEDS"); s != "" {
		sc.Seeds = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.ParseUint(f, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			sc.Seeds = append(sc.Seeds, n)
		}
	}
	runs := run(t, sc, Options{Methods: mustMethods(t, "exact-shapley"), Modes: []string{ModePlain}})
	for _, sr := range runs {
		val := find(t, sr, ModePlain, "exact-shapley")
		t.Logf("seed %d: random free rider (client 7) total %+.4f, round 0 %+.4f; label flipper (client 6) %+.4f", sr.Seed, val.Totals[7], val.Rounds[0][7], val.Totals[6])
		if !(val.Totals[7] <= 0) {
			t.Errorf("seed %d: the random free rider's total is %+.4f, want ≤ 0", sr.Seed, val.Totals[7])
		}
	}
}
