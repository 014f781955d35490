package main

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

	"github.com/tallyfl/tally/valuation"
)

// dpFidelityScenario is the job `tally audit dp` runs by default: the
// demo's breast-cancer federation with sizes skewed and two bad clients
// (one flipping half its labels, one a free rider sending noise), so that
// the clients' values differ clearly and a ranking has something to get
// right. Without DP, the influence values of this job rank the clients
// almost as plaintext exact Shapley does, which the iid demo's
// near-equal clients did not (README, privacy section).
var dpFidelityScenario = []string{
	"--dataset", "breast-cancer", "--clients", "8", "--rounds", "20",
	"--partition", "size-skew", "--corrupt", "6=label-flip:0.5", "--corrupt", "7=free-rider:random",
}

// dpFidelityRow is one run of `tally audit dp`.
type dpFidelityRow struct {
	Secure   string // the run's secure aggregation, and its valuation
	Method   string
	Seed     uint64
	Epsilon  float64 // 0: no DP
	Sigma    float64
	Accuracy float64
	// Rho is Spearman's ρ of the clients' values against those of the
	// same seed's plaintext exact Shapley run.
	Rho float64
	// Values and Exact are the clients' values, in client order.
	Values, Exact []float64
}

// runAuditDP measures what differential privacy costs a job's accuracy
// and its valuation: for each seed, the job without DP and at each ε,
// under secure aggregation with the valuation a private job uses, against
// the plaintext exact Shapley values of the same job without DP.
func runAuditDP(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("audit dp")
	fs.SetOutput(stderr)
	seeds := fs.String("seeds", "1,2,3", "job seeds, comma-separated")
	epsilons := fs.String("epsilons", "1,4,8", "per-client ε of the DP runs (privacy.dp.epsilon), comma-separated")
	delta := fs.Float64("dp-delta", 1e-5, "δ of the DP runs (privacy.dp.delta)")
	clip := fs.Float64("dp-clip", 10, "L2 bound C on a client's contribution n_i·Δ_i (privacy.dp.clip)")
	secure := fs.String("secure-aggregation", "he,none", "secure aggregation of the runs valued, comma-separated: he (valued by influence, as a private job is) and/or none (plaintext exact Shapley on the noised updates)")
	scenario := fs.String("scenario", strings.Join(dpFidelityScenario, " "), "tally simulate flags of the job, space-separated")
	out := fs.String("out", "audit/results", "directory for dp-fidelity.md and dp-fidelity.csv")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: tally audit dp [flags]\n\nRuns the --scenario job (tally simulate, in process) without DP and at each ε, for each seed,\nand writes its test accuracy and the Spearman ρ of its clients' values against plaintext exact\nShapley (--secure-aggregation none --valuation-method exact-shapley, no DP) into --out.\n\n")
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	seedList, err := intList("--seeds", *seeds)
	if err != nil {
		return err
	}
	var epsList []float64
	for _, f := range splitList(*epsilons) {
		v, err := strconv.ParseFloat(f, 64)
		if err != nil || !(v > 0) {
			return fmt.Errorf("--epsilons: %q is not a number > 0", f)
		}
		epsList = append(epsList, v)
	}
	base := strings.Fields(*scenario)
	start := time.Now()
	run := func(extra ...string) (*simReport, error) {
		sf := newFlagSet("simulate")
		o := simFlags(sf)
		a := append(append([]string{}, base...), extra...)
		if err := parse(sf, a); err != nil {
			return nil, fmt.Errorf("audit dp: --scenario: %w", err)
		}
		o.Quiet, o.CentralisedBaseline = true, false
		rep, err := simulate(ctx, o, io.Discard, io.Discard)
		if err != nil {
			return nil, fmt.Errorf("audit dp: tally simulate %s: %w", strings.Join(a, " "), err)
		}
		return rep, nil
	}
	values := func(rep *simReport) map[string]float64 {
		m := map[string]float64{}
		for _, c := range rep.Contributions {
			m[c.Client] = c.Value
		}
		return m
	}
	secures := splitList(*secure)
	var rows []dpFidelityRow
	for _, s := range seedList {
		seed := strconv.Itoa(s)
		ref, err := run("--seed", seed, "--secure-aggregation", "none", "--valuation-method", "exact-shapley")
		if err != nil {
			return err
		}
		exact := values(ref)
		ids := make([]string, 0, len(ref.Clients))
		for _, c := range ref.Clients {
			ids = append(ids, c.ID)
		}
		for _, sec := range secures {
			for _, eps := range append([]float64{0}, epsList...) {
				extra := []string{"--seed", seed, "--secure-aggregation", sec}
				if sec == "none" {
					extra = append(extra, "--valuation-method", "exact-shapley")
				}
				if eps > 0 {
					extra = append(extra, "--dp-epsilon", strconv.FormatFloat(eps, 'g', -1, 64),
						"--dp-delta", strconv.FormatFloat(*delta, 'g', -1, 64), "--dp-clip", strconv.FormatFloat(*clip, 'g', -1, 64))
				}
				rep, err := run(extra...)
				if err != nil {
					return err
				}
				got := values(rep)
				row := dpFidelityRow{Secure: sec, Method: "valuation mode " + rep.Valuation.Mode + ", method " + rep.Valuation.Method,
					Seed: uint64(s), Epsilon: eps, Accuracy: rep.TestAccuracy}
				if rep.DP != nil {
					row.Sigma = rep.DP.Sigma
				}
				for _, id := range ids {
					v, ok := got[id]
					if !ok {
						return fmt.Errorf("audit dp: seed %d, ε %g: client %s has no value (clients valued: %d)", s, eps, id, len(got))
					}
					row.Values = append(row.Values, v)
					row.Exact = append(row.Exact, exact[id])
				}
				row.Rho = valuation.Spearman(row.Values, row.Exact)
				rows = append(rows, row)
				fmt.Fprintf(stdout, "seed %d, %s, %s: test accuracy %.3f, ρ vs exact Shapley %.3f\n", s, sec, epsName(eps), row.Accuracy, row.Rho)
			}
		}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	wall := time.Since(start).Round(time.Second)
	cmd := "tally audit dp " + strings.Join(args, " ")
	md := filepath.Join(*out, "dp-fidelity.md")
	if err := writeFile(md, func(w io.Writer) error {
		return writeDPFidelity(w, rows, epsList, seedList, base, secures, *delta, *clip,
			start.UTC().Format("2006-01-02 15:04 UTC")+fmt.Sprintf(" (%s wall)", wall), strings.TrimSpace(cmd))
	}); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(*out, "dp-fidelity.csv"), func(w io.Writer) error { return writeDPFidelityCSV(w, rows) }); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d runs in %s; table in %s\n", len(rows)+len(seedList), wall, md)
	return nil
}

func epsName(eps float64) string {
	if eps == 0 {
		return "no DP"
	}
	return fmt.Sprintf("ε = %g", eps)
}

func writeFile(path string, f func(io.Writer) error) error {
	file, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f(file); err != nil {
		file.Close()
		return fmt.Errorf("audit: writing %s: %w", path, err)
	}
	return file.Close()
}

// writeDPFidelity writes the table: one line per ε with each seed's test
// accuracy and ρ, and their means.
func writeDPFidelity(w io.Writer, rows []dpFidelityRow, eps []float64, seeds []int, scenario []string, secures []string, delta, clip float64, date, cmd string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# What differential privacy costs a job: accuracy and valuation fidelity\n\n")
	fmt.Fprintf(&b, "Measured %s on %s with `%s`. Generated by `tally audit dp` (make audit-dp); do not edit.\n\n", date, auditMachine(), cmd)
	fmt.Fprintf(&b, "Job: `tally simulate %s`, seeds %s; each run without DP and with "+
		"`--dp-epsilon ε --dp-delta %g --dp-clip %g`, under each secure aggregation below. ρ is Spearman's rank correlation of the clients' values against plaintext "+
		"exact Shapley of the same seed without DP (`--secure-aggregation none --valuation-method exact-shapley`). "+
		"The clients draw their DP noise from crypto/rand, as they must (noise the coordinator could regenerate from the seed "+
		"would protect nothing), so a rerun gives other figures for the DP rows.\n\n",
		strings.Join(scenario, " "), joinInts(seeds), delta, clip)
	fmt.Fprintf(&b, "| secure aggregation (valuation) | ε (δ = %g) | σ | test accuracy (per seed) | mean | ρ vs exact Shapley (per seed) | mean |\n|---|---|---:|---|---:|---|---:|\n", delta)
	for _, sec := range secures {
		for _, e := range append([]float64{0}, eps...) {
			var accs, rhos []string
			var acc, rho float64
			sigma := math.NaN()
			n := 0
			method := ""
			for _, r := range rows {
				if r.Epsilon != e || r.Secure != sec {
					continue
				}
				method = r.Method
				accs = append(accs, fmt.Sprintf("%.3f", r.Accuracy))
				rhos = append(rhos, fmt.Sprintf("%.3f", r.Rho))
				acc += r.Accuracy
				rho += r.Rho
				sigma = r.Sigma
				n++
			}
			if n == 0 {
				continue
			}
			sig := "—"
			if e > 0 {
				sig = fmt.Sprintf("%.2f", sigma)
			}
			fmt.Fprintf(&b, "| %s (%s) | %s | %s | %s | %.3f | %s | %.3f |\n", sec, method, strings.TrimPrefix(epsName(e), "ε = "), sig,
				strings.Join(accs, ", "), acc/float64(n), strings.Join(rhos, ", "), rho/float64(n))
		}
	}
	fmt.Fprintf(&b, "\nPer-client values are in dp-fidelity.csv.\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ", ")
}

func writeDPFidelityCSV(w io.Writer, rows []dpFidelityRow) error {
	cw := csv.NewWriter(w)
	if err := cw.Write([]string{"secure_aggregation", "seed", "epsilon", "sigma", "test_accuracy", "rho_exact_shapley", "values", "exact_shapley_values"}); err != nil {
		return err
	}
	join := func(v []float64) string {
		s := make([]string, len(v))
		for i, x := range v {
			s[i] = strconv.FormatFloat(x, 'g', 6, 64)
		}
		return strings.Join(s, ";")
	}
	for _, r := range rows {
		if err := cw.Write([]string{r.Secure, strconv.FormatUint(r.Seed, 10), strconv.FormatFloat(r.Epsilon, 'g', -1, 64), strconv.FormatFloat(r.Sigma, 'g', 6, 64),
			strconv.FormatFloat(r.Accuracy, 'f', 4, 64), strconv.FormatFloat(r.Rho, 'f', 4, 64), join(r.Values), join(r.Exact)}); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}
