package main

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/tallyfl/tally/experiments"
)

// errFailed means some item failed; the lines say which.
var errFailed = errors.New("acceptance: an item failed")

//go:embed scenarios/*.yaml
var embedded embed.FS

// The items, in the order they are printed.
const (
	itemInversions = "inversions"
	itemFreeRiders = "free-riders"
	itemDuplicate  = "duplicate"
	itemSybil      = "sybil"
	itemSpearman   = "spearman"
)

var allItems = []string{itemInversions, itemFreeRiders, itemDuplicate, itemSybil, itemSpearman}

// Thresholds of issue 15's acceptance.
const (
	maxDuplicatePay = 1.1
	maxSybilPay     = 0.02
	minSpearman     = 0.9
	// tol absorbs rounding: a payout within tol baselines of the baseline
	// is the baseline.
	tol = 1e-9
)

// setup is a scheme and a valuation mode.
type setup struct{ secure, mode string }

func (s setup) String() string { return s.secure + "/" + s.mode }

type options struct {
	seeds     []uint64
	setups    []setup
	items     []string
	rounds    int
	share     float64
	scenarios string
	simulate  bool
	tally     string
	out       io.Writer
	progress  io.Writer
}

// outcome is one job as the checks see it: per client its corruption
// ("none" for an honest client), its total value V (credited and netted,
// what the coordinator settles by) and its payout as a share of the job's
// budget; baseline[i] is what the baseline alone paid client i (split
// by rows, so it differs between clients of unequal size).
type outcome struct {
	corruption []string
	values     []float64
	payouts    []float64
	baseline   []float64
}

// line is one printed result.
type line struct {
	item, scenario string
	setup          setup
	seed           uint64
	pass, skip     bool
	figures        string
}

func (l line) String() string {
	verdict := "FAIL"
	switch {
	case l.skip:
		verdict = "SKIP"
	case l.pass:
		verdict = "PASS"
	}
	return fmt.Sprintf("%s  %-11s %-24s %-13s seed %d  %s", verdict, l.item, l.scenario, l.setup, l.seed, l.figures)
}

func parseSeeds(s string) ([]uint64, error) {
	if a, b, ok := strings.Cut(s, "-"); ok {
		lo, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 64)
		hi, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 64)
		if err1 != nil || err2 != nil || hi < lo || hi-lo > 1000 {
			return nil, fmt.Errorf("--seeds: %q is not a range like 1-5", s)
		}
		var out []uint64
		for x := lo; x <= hi; x++ {
			out = append(out, x)
		}
		return out, nil
	}
	var out []uint64
	for _, p := range strings.Split(s, ",") {
		x, err := strconv.ParseUint(strings.TrimSpace(p), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("--seeds: %q is not a seed", p)
		}
		out = append(out, x)
	}
	return out, nil
}

// parseSetups pairs every scheme with every listed mode it allows (plain
// needs the updates in the clear, so none only), or with its default.
func parseSetups(secure, modes string) ([]setup, error) {
	var schemes []string
	for _, s := range strings.Split(secure, ",") {
		s = strings.TrimSpace(s)
		if s != "he" && s != "none" {
			return nil, fmt.Errorf("--secure: %q is not he or none", s)
		}
		if !slices.Contains(schemes, s) {
			schemes = append(schemes, s)
		}
	}
	var ms []string
	if strings.TrimSpace(modes) != "" {
		var err error
		if ms, err = experiments.ParseModes([]string{modes}); err != nil {
			return nil, fmt.Errorf("--modes: %w", err)
		}
	}
	var out []setup
	for _, s := range schemes {
		if len(ms) == 0 {
			def := experiments.ModePlain
			if s == "he" {
				def = experiments.ModeProjection
			}
			out = append(out, setup{s, def})
			continue
		}
		for _, m := range ms {
			if m == experiments.ModePlain && s == "he" {
				continue
			}
			out = append(out, setup{s, m})
		}
	}
	if len(out) == 0 {
		return nil, errors.New("--modes: no mode is allowed under these schemes (plain needs --secure none)")
	}
	return out, nil
}

func parseItems(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return allItems, nil
	}
	var out []string
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if !slices.Contains(allItems, p) {
			return nil, fmt.Errorf("--items: %q is not one of %v", p, allItems)
		}
		out = append(out, p)
	}
	return out, nil
}

// scenarioDir finds experiments/scenarios in the working directory or
// above it.
func scenarioDir(dir string) (string, error) {
	if dir != "" {
		return dir, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		for _, c := range []string{filepath.Join(d, "experiments", "scenarios"), filepath.Join(d, "scenarios")} {
			if _, err := os.Stat(filepath.Join(c, "sybil-bc5.yaml")); err == nil {
				return c, nil
			}
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no experiments/scenarios in %s or above: give --scenarios", wd)
		}
	}
}

// onlyBaseline reports whether paid is no more than the baseline, up to
// rounding.
func onlyBaseline(paid, baseline float64) bool { return paid <= baseline*(1+tol)+1e-12 }

// inBaselines writes a payout in baselines, or as a share of the budget
// when there is no baseline.
func inBaselines(paid, baseline float64) string {
	if baseline > 0 {
		return fmt.Sprintf("%.3f baselines", paid/baseline)
	}
	return fmt.Sprintf("%.4f of the budget (no baseline)", paid)
}

// checkInversions: no pair paid against its values' order, and whoever
// has V ≤ 0 gets the baseline only.
func checkInversions(o outcome) (bool, string) {
	inv := experiments.Inversions(o.values, o.payouts)
	n := len(o.values)
	var over []string
	for i, v := range o.values {
		if v <= 0 && !onlyBaseline(o.payouts[i], o.baseline[i]) {
			over = append(over, fmt.Sprintf("client %d (V %.4g) paid %s", i, v, inBaselines(o.payouts[i], o.baseline[i])))
		}
	}
	nonpos := 0
	for _, v := range o.values {
		if v <= 0 {
			nonpos++
		}
	}
	f := fmt.Sprintf("%d inversions of %d pairs; %d clients with V ≤ 0", inv, n*(n-1)/2, nonpos)
	if len(over) > 0 {
		f += ", paid above the baseline: " + strings.Join(over, "; ")
	} else if nonpos > 0 {
		f += ", each paid the baseline only"
	}
	f += "; V " + fmtList(o.values, "%.3g") + ", paid " + fmtList(o.payouts, "%.3f")
	return inv == 0 && len(over) == 0, f
}

// checkFreeRiders: every free rider gets the baseline only, and the zero
// and random ones have V ≤ 0.
func checkFreeRiders(o outcome) (bool, string) {
	pass := true
	var parts []string
	for i, c := range o.corruption {
		kind, ok := strings.CutPrefix(c, "free-rider:")
		if !ok {
			continue
		}
		ok = onlyBaseline(o.payouts[i], o.baseline[i])
		if (kind == "zero" || kind == "random") && !(o.values[i] <= 0) {
			ok = false
		}
		pass = pass && ok
		parts = append(parts, fmt.Sprintf("%s (client %d) V %.4g paid %s", kind, i, o.values[i], inBaselines(o.payouts[i], o.baseline[i])))
	}
	if len(parts) == 0 {
		return false, "no free rider in the job"
	}
	return pass, strings.Join(parts, "; ") + "; the least-paid honest client " + honestMin(o)
}

// at is xs[i], or 0 past its end (an outcome without baselines).
func at(xs []float64, i int) float64 {
	if i < len(xs) {
		return xs[i]
	}
	return 0
}

func honestMin(o outcome) string {
	at := -1
	for i, c := range o.corruption {
		if c == "none" && (at < 0 || o.payouts[i]/o.baseline[i] < o.payouts[at]/o.baseline[at]) {
			at = i
		}
	}
	if at < 0 {
		return "none"
	}
	return inBaselines(o.payouts[at], o.baseline[at])
}

// checkDuplicate: the pair's payout over the original's in the job
// without the copy; alone[i] is client i's index there (−1: the copy).
func checkDuplicate(with, without outcome, pairs [][2]int, alone []int) (bool, string) {
	r := experiments.DuplicatePay(with.payouts, without.payouts, pairs, alone)
	var parts []string
	for _, p := range pairs {
		parts = append(parts, fmt.Sprintf("original %d %.3f + copy %d %.3f of the budget, original alone %.3f", p[1], with.payouts[p[1]], p[0], with.payouts[p[0]], without.payouts[alone[p[1]]]))
	}
	return r <= maxDuplicatePay, fmt.Sprintf("ratio %.3f (≤ %.1f): %s", r, maxDuplicatePay, strings.Join(parts, "; "))
}

// checkSybil: the split client's gain of the budget, and how much of it
// is the baseline (split by rows: 0 unless the parts claim more rows than
// the whole) and how much the value part.
func checkSybil(base, split outcome, client int, sybils []int) (bool, string) {
	g := experiments.SybilPay(base.payouts, client, split.payouts, sybils)
	s := 0.0
	for _, i := range sybils {
		s += split.payouts[i]
	}
	gb := -at(base.baseline, client)
	for _, i := range sybils {
		gb += at(split.baseline, i)
	}
	return g <= maxSybilPay, fmt.Sprintf("gain %+.4f of the budget (≤ %+.2f; baseline part %+.4f, value part %+.4f): whole %.4f, split into %d %.4f",
		g, maxSybilPay, gb, g-gb, base.payouts[client], len(sybils), s)
}

// checkSpearman: the honest clients' payouts against the reference.
func checkSpearman(o outcome, reference []float64) (bool, string) {
	honest := honestOf(o)
	rho := experiments.PaySpearman(o.payouts, reference, honest)
	var p, v, b, r []float64
	for i, h := range honest {
		if h {
			p, v, r = append(p, o.payouts[i]), append(v, at(o.values, i)), append(r, reference[i])
			b = append(b, at(o.baseline, i))
		}
	}
	return rho >= minSpearman, fmt.Sprintf("ρ %.3f (≥ %.1f) over %d honest clients; paid %s (baselines %s), V %s, exact Shapley (credited) %s",
		rho, minSpearman, len(p), fmtList(p, "%.3f"), fmtList(b, "%.4f"), fmtList(v, "%.3g"), fmtList(r, "%.3g"))
}

// honestOf flags the clients of o that are not corrupted.
func honestOf(o outcome) []bool {
	honest := make([]bool, len(o.corruption))
	for i, c := range o.corruption {
		honest[i] = c == "none"
	}
	return honest
}

func fmtList(xs []float64, f string) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprintf(f, x)
	}
	return "[" + strings.Join(s, " ") + "]"
}

// check runs the items and prints their lines and a verdict per item.
func check(ctx context.Context, o options) error {
	path := "in process (experiments.Run: each mode's arithmetic in the clear, paid by experiments.JobPay)"
	var src source = &inProcess{o: o}
	if o.simulate {
		path = "tally simulate (coordinator and clients over gRPC; CKKS under he)"
		sim, err := newSimulator(ctx, o)
		if err != nil {
			return err
		}
		defer sim.close()
		src = sim
	}
	return report(ctx, o, path, src)
}

// report prints every item's lines from src and a verdict per item.
func report(ctx context.Context, o options, path string, src source) error {
	fmt.Fprintf(o.out, "issue 15 acceptance: seeds %v, setups %v, %s\n", o.seeds, o.setups, path)
	failed := false
	for _, item := range o.items {
		lines, err := src.item(ctx, item)
		if err != nil {
			return fmt.Errorf("%s: %w", item, err)
		}
		pass, skipped := 0, 0
		for _, l := range lines {
			fmt.Fprintln(o.out, l)
			switch {
			case l.skip:
				skipped++
			case l.pass:
				pass++
			}
		}
		verdict := "PASS"
		switch {
		case pass+skipped < len(lines):
			verdict, failed = "FAIL", true
		case skipped == len(lines):
			verdict = "SKIP"
		}
		fmt.Fprintf(o.out, "%s  %s: %d of %d passed", verdict, item, pass, len(lines)-skipped)
		if skipped > 0 {
			fmt.Fprintf(o.out, ", %d skipped", skipped)
		}
		fmt.Fprintln(o.out)
	}
	if failed {
		return errFailed
	}
	return nil
}

// source produces an item's lines.
type source interface {
	item(ctx context.Context, item string) ([]line, error)
}
