package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

// TestAcceptanceOneSeed runs the tool in process on one seed, one setup
// (none/plain) and two rounds: every item prints a line per scenario and a
// verdict, and the run ends PASS or with errFailed, nothing else.
func TestAcceptanceOneSeed(t *testing.T) {
	var out, errs bytes.Buffer
	err := run(context.Background(), []string{"--seeds", "1", "--secure", "none", "--rounds", "2"}, &out, &errs)
	if err != nil && !errors.Is(err, errFailed) {
		t.Fatalf("run: %v\n%s", err, errs.String())
	}
	t.Log("\n" + out.String())
	for _, want := range []string{
		"inversions  demo-bc8 ", "inversions  demo-corrupt-bc8 ", "free-riders free-riders-bc8 ",
		"duplicate   duplicates-retrained-bc5 ", "duplicate   duplicates-bc5 ", "sybil       sybil-bc5 ", "spearman    demo-corrupt-bc8 ",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no line for %q", want)
		}
	}
	for _, item := range allItems {
		if !strings.Contains(out.String(), "PASS  "+item+": ") && !strings.Contains(out.String(), "FAIL  "+item+": ") {
			t.Errorf("no verdict for %s", item)
		}
	}
	if strings.Contains(out.String(), "FAIL") != errors.Is(err, errFailed) {
		t.Errorf("a FAIL line and the error disagree: %v", err)
	}
}

// fixed is a source whose lines are given.
type fixed map[string][]line

func (f fixed) item(_ context.Context, item string) ([]line, error) { return f[item], nil }

// TestChecksFail feeds every check a job that breaks its rule in one way,
// and the same job without the break: the first fails, the second passes.
func TestChecksFail(t *testing.T) {
	honest := []string{"none", "none", "none"}
	fr := []string{"none", "none", "free-rider:zero"}
	base := 0.1 / 3
	bases := []float64{base, base, base}
	cases := []struct {
		name      string
		pass, bad func() (bool, string)
	}{
		{"inversion",
			func() (bool, string) {
				return checkInversions(outcome{honest, []float64{3, 2, 1}, []float64{0.5, 0.3, 0.2}, bases})
			},
			// Client 1 has more value than client 2 but is paid less.
			func() (bool, string) {
				return checkInversions(outcome{honest, []float64{3, 2, 1}, []float64{0.5, 0.2, 0.3}, bases})
			}},
		{"non-positive value paid above the baseline",
			func() (bool, string) {
				return checkInversions(outcome{honest, []float64{3, 2, -1}, []float64{0.6, 0.4 - base, base}, bases})
			},
			func() (bool, string) {
				return checkInversions(outcome{honest, []float64{3, 2, 0}, []float64{0.6, 0.4 - 2*base, 2 * base}, bases})
			}},
		{"free rider paid above the baseline",
			func() (bool, string) {
				return checkFreeRiders(outcome{fr, []float64{3, 2, -1}, []float64{0.6, 0.4 - base, base}, bases})
			},
			func() (bool, string) {
				return checkFreeRiders(outcome{fr, []float64{3, 2, -1}, []float64{0.6, 0.4 - 1.5*base, 1.5 * base}, bases})
			}},
		{"zero free rider with a positive value",
			func() (bool, string) {
				return checkFreeRiders(outcome{fr, []float64{3, 2, 0}, []float64{0.6, 0.4 - base, base}, bases})
			},
			func() (bool, string) {
				return checkFreeRiders(outcome{fr, []float64{3, 2, 0.01}, []float64{0.6, 0.4 - base, base}, bases})
			}},
		{"duplicate paid twice",
			func() (bool, string) {
				return checkDuplicate(outcome{payouts: []float64{0.25, 0.5, 0.25}}, outcome{payouts: []float64{0.5, 0.5}}, [][2]int{{2, 0}}, []int{0, 1, -1})
			},
			func() (bool, string) {
				return checkDuplicate(outcome{payouts: []float64{0.3, 0.4, 0.3}}, outcome{payouts: []float64{0.5, 0.5}}, [][2]int{{2, 0}}, []int{0, 1, -1})
			}},
		{"sybil gains",
			func() (bool, string) {
				return checkSybil(outcome{payouts: []float64{0.5, 0.5}}, outcome{payouts: []float64{0.2, 0.49, 0.31}}, 0, []int{0, 2})
			},
			func() (bool, string) {
				return checkSybil(outcome{payouts: []float64{0.5, 0.5}}, outcome{payouts: []float64{0.2, 0.45, 0.35}}, 0, []int{0, 2})
			}},
		{"honest payouts against exact Shapley",
			func() (bool, string) {
				return checkSpearman(outcome{corruption: honest, payouts: []float64{0.5, 0.3, 0.2}}, []float64{3, 2, 1})
			},
			func() (bool, string) {
				return checkSpearman(outcome{corruption: honest, payouts: []float64{0.5, 0.2, 0.3}}, []float64{3, 2, 1})
			}},
	}
	for _, c := range cases {
		if ok, fig := c.pass(); !ok {
			t.Errorf("%s: the rule kept fails: %s", c.name, fig)
		}
		if ok, fig := c.bad(); ok {
			t.Errorf("%s: the rule broken passes: %s", c.name, fig)
		}
	}
}

// TestCheckReportsFailure: one failing line makes its item FAIL and the
// run return errFailed; the other items still print.
func TestCheckReportsFailure(t *testing.T) {
	var out bytes.Buffer
	o := options{seeds: []uint64{1}, setups: []setup{{"none", "plain"}}, items: []string{itemInversions, itemSybil}, out: &out}
	ok, fig := checkInversions(outcome{[]string{"none", "none"}, []float64{2, 1}, []float64{0.4, 0.6}, []float64{0.05, 0.05}})
	src := fixed{
		itemInversions: {{item: itemInversions, scenario: "demo-bc8", setup: o.setups[0], seed: 1, pass: ok, figures: fig}},
		itemSybil:      {{item: itemSybil, scenario: "sybil-bc5", setup: o.setups[0], seed: 1, pass: true, figures: "gain +0.0000"}},
	}
	if err := report(context.Background(), o, "fixed", src); !errors.Is(err, errFailed) {
		t.Fatalf("report = %v, want errFailed", err)
	}
	s := out.String()
	for _, want := range []string{"FAIL  inversions  demo-bc8", "1 inversions of 1 pairs", "FAIL  inversions: 0 of 1 passed", "PASS  sybil: 1 of 1 passed"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
}
