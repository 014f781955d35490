package experiments

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// Summary is one (scenario, mode, method) over its repeats: every metric of
// metricColumns as a mean with a 95% interval.
type Summary struct {
	Scenario, Mode, Method string
	Stats                  []Interval // in the order of metricColumns
	Errors                 int        // repeats that failed
}

// Summarise groups metrics by (scenario, mode, method), keeping first-seen
// order.
func Summarise(ms []Metrics) []Summary {
	type key struct{ s, mode, method string }
	idx := map[key]int{}
	var out []Summary
	var cols [][][]float64
	for _, m := range ms {
		k := key{m.Scenario, m.Mode, m.Method}
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, Summary{Scenario: m.Scenario, Mode: m.Mode, Method: m.Method})
			cols = append(cols, make([][]float64, len(metricColumns)))
		}
		if m.Err != "" {
			out[i].Errors++
			continue
		}
		for c, col := range metricColumns {
			cols[i][c] = append(cols[i][c], col.get(m))
		}
	}
	for i := range out {
		for c := range metricColumns {
			out[i].Stats = append(out[i].Stats, MeanCI(cols[i][c]))
		}
	}
	return out
}

func (s Summary) stat(name string) Interval {
	for c, col := range metricColumns {
		if col.name == name {
			return s.Stats[c]
		}
	}
	panic("experiments: no metric " + name)
}

// WriteSummaryCSV writes summary.csv: for every metric its mean and 95%
// half-width over repeats.
func WriteSummaryCSV(w io.Writer, ss []Summary) error {
	cw := csv.NewWriter(w)
	head := []string{"scenario", "mode", "method", "repeats", "errors"}
	for _, c := range metricColumns {
		head = append(head, c.name, c.name+"_ci95")
	}
	cw.Write(head)
	for _, s := range ss {
		n := 0
		if len(s.Stats) > 0 {
			n = s.Stats[0].N
		}
		row := []string{s.Scenario, s.Mode, s.Method, fmt.Sprint(n + s.Errors), fmt.Sprint(s.Errors)}
		for _, st := range s.Stats {
			row = append(row, fmtMetric(st.Mean), fmtMetric(st.Half))
		}
		cw.Write(row)
	}
	cw.Flush()
	return cw.Error()
}

// cell formats a mean ± half-width for Markdown.
func cell(iv Interval, digits int) string {
	if math.IsNaN(iv.Mean) {
		return "—"
	}
	if iv.N <= 1 || iv.Half == 0 {
		return fmt.Sprintf("%.*f", digits, iv.Mean)
	}
	return fmt.Sprintf("%.*f ± %.*f", digits, iv.Mean, digits, iv.Half)
}

// WriteSummaryMarkdown writes summary.md: per scenario, a table of every
// (mode, method) with its fidelity against the reference and its cost.
func WriteSummaryMarkdown(w io.Writer, scenarios []Scenario, runs []SeedRun, ss []Summary) error {
	var b bytes.Buffer
	fmt.Fprintln(&b, "# Valuation experiments: summary")
	fmt.Fprintln(&b)
	fmt.Fprintln(&b, "Mean ± 95% interval over seeds (Student's t). ρ: Spearman, τ: Kendall τ-b, r: Pearson, all against the")
	fmt.Fprintln(&b, "reference's FedSV totals; L2: ‖φ − φ*‖/‖φ*‖; AUC: a corrupted client valued below an honest one;")
	fmt.Fprintln(&b, "sym: |φ_dup − φ_orig| / mean|φ|; sybil: change of the split client's share of the total value;")
	fmt.Fprintln(&b, "evals: distinct coalition utilities over all rounds; vec/scal dec: decryptions a secure-aggregation job")
	fmt.Fprintln(&b, "would make (vectors, scalars) over all rounds; min k: fewest clients behind a decrypted vector;")
	fmt.Fprintln(&b, "HE add, HE mul, shares: ciphertext additions, plaintext×ciphertext multiplications and decryption")
	fmt.Fprintln(&b, "shares such a job would compute over all rounds (default CKKS parameters and committee; counted, not")
	fmt.Fprintln(&b, "timed, by the rule in the README; plain mode runs without encryption: 0; combinations in summary.csv).")
	fmt.Fprintln(&b, "Payouts under the job's rules (a budget of 1, baseline share 0.1 paid every round by rows, the rest settled")
	fmt.Fprintln(&b, "at the end by max(V, 0) of the credited totals, levelled so that no client is paid less in all than one")
	fmt.Fprintln(&b, "of lower V): pay ρ: Spearman of the honest clients' payouts")
	fmt.Fprintln(&b, "against the reference; fr pay: the best-paid free rider in baselines (1: the baseline only); dup pay: the")
	fmt.Fprintln(&b, "original and its copy together over the original in the same job without the copy; sybil pay: the split")
	fmt.Fprintln(&b, "client's gain of the budget.")
	fmt.Fprintln(&b, "Wall times are per run (all rounds) on the machine in machine.txt.")
	byName := map[string][]SeedRun{}
	for _, r := range runs {
		byName[r.Scenario] = append(byName[r.Scenario], r)
	}
	for _, sc := range scenarios {
		rs := byName[sc.Name]
		if len(rs) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n## %s\n\n", sc.Name)
		if sc.Description != "" {
			fmt.Fprintf(&b, "%s\n\n", strings.TrimSpace(sc.Description))
		}
		acc := make([]float64, len(rs))
		for i, r := range rs {
			acc[i] = r.TestAccuracy
		}
		ref := "exact Shapley (plain)"
		if sc.Reference == ReferenceMonteCarlo {
			ref = fmt.Sprintf("Monte Carlo, %d permutations a round (plain)", sc.ReferenceSamples)
		}
		fmt.Fprintf(&b, "%s, %s, %d clients, %s partition, %d rounds, %d seeds; reference: %s; final test accuracy %s.\n\n",
			sc.Dataset, sc.Model.Kind, sc.Clients, sc.Partition.Kind, sc.Rounds, len(rs), ref, cell(MeanCI(acc), 3))
		fmt.Fprintln(&b, "| mode | method | ρ | τ | r | L2 | AUC | sym | sybil | pay ρ | fr pay | dup pay | sybil pay | evals | vec dec | scal dec | min k | HE add | HE mul | shares | wall ms |")
		fmt.Fprintln(&b, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
		for _, s := range ss {
			if s.Scenario != sc.Name {
				continue
			}
			if s.Errors > 0 && s.stat("spearman").N == 0 {
				fmt.Fprintf(&b, "| %s | %s | not run: see runs.csv | | | | | | | | | | | | | | | | | | |\n", s.Mode, s.Method)
				continue
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
				s.Mode, s.Method,
				cell(s.stat("spearman"), 2), cell(s.stat("kendall"), 2), cell(s.stat("pearson"), 2), cell(s.stat("l2"), 2),
				cell(s.stat("auc"), 2), cell(s.stat("symmetry"), 3), cell(s.stat("sybil_gain"), 3),
				cell(s.stat("pay_spearman"), 2), cell(s.stat("freerider_pay"), 2), cell(s.stat("duplicate_pay"), 2), cell(s.stat("sybil_pay"), 3),
				cell(s.stat("evaluations"), 0), cell(s.stat("vector_decryptions"), 0), cell(s.stat("scalar_decryptions"), 0),
				cell(s.stat("min_contributors"), 0), cell(s.stat("he_adds"), 0), cell(s.stat("he_mults"), 0),
				cell(s.stat("dec_shares"), 0), cell(s.stat("wall_ms"), 0))
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// WriteAll writes every table and plot of runs into dir: runs.csv,
// values.csv, rounds.csv, summary.csv, summary.md and plots/*.png.
func WriteAll(dir string, scenarios []Scenario, runs []SeedRun) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var ms []Metrics
	for _, r := range runs {
		ms = append(ms, Evaluate(r)...)
	}
	ss := Summarise(ms)
	files := []struct {
		name  string
		write func(io.Writer) error
	}{
		{"runs.csv", func(w io.Writer) error { return WriteMetrics(w, ms) }},
		{"values.csv", func(w io.Writer) error { return WriteValues(w, runs) }},
		{"rounds.csv", func(w io.Writer) error { return WriteRounds(w, runs) }},
		{"summary.csv", func(w io.Writer) error { return WriteSummaryCSV(w, ss) }},
		{"summary.md", func(w io.Writer) error { return WriteSummaryMarkdown(w, scenarios, runs, ss) }},
	}
	for _, f := range files {
		var b bytes.Buffer
		if err := f.write(&b); err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, f.name), b.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return WritePlots(filepath.Join(dir, "plots"), scenarios, runs, ss)
}
