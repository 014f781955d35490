package experiments

import (
	"bytes"
	"math"
	"slices"
	"strings"
	"testing"
)

// TestJobPay pays two rounds by the job's rules, by hand: round 0 gains
// (Σφ = 0.8 > 0) and is credited as valued; round 1 loses (Σφ = −0.1), so
// it credits nobody and debits client 2. Credited totals are 0.6, 0.3,
// −0.5 (raw sums would be 0.7, 0.5, −0.5 and pay client 1 more). The
// baseline share 0.1 pays each client 0.1/3 over the job; the escrow 0.9
// is split 2:1 between clients 0 and 1, and client 2 gets the baseline
// only.
func TestJobPay(t *testing.T) {
	v := Valued{Rounds: [][]float64{{0.6, 0.3, -0.1}, {0.1, 0.2, -0.4}}, Totals: []float64{0.7, 0.5, -0.5}}
	p, err := JobPay(v, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	base := 0.1 / 3
	wantV := []float64{0.6, 0.3, -0.5}
	wantP := []float64{base + 0.6, base + 0.3, base}
	for i := range wantV {
		if math.Abs(p.Values[i]-wantV[i]) > 1e-12 || math.Abs(p.Payouts[i]-wantP[i]) > 1e-12 {
			t.Errorf("client %d: credited %v paid %v, want %v and %v", i, p.Values[i], p.Payouts[i], wantV[i], wantP[i])
		}
	}
	for i, b := range p.Baseline {
		if math.Abs(b-base) > 1e-12 {
			t.Errorf("client %d's baseline %v, want %v", i, b, base)
		}
	}
	if fr := FreeRiderPay(p, []int{2}); math.Abs(fr-1) > 1e-9 {
		t.Errorf("client 2 paid %v baselines, want 1", fr)
	}
	if fr := FreeRiderPay(p, []int{1, 2}); !(fr > 9) {
		t.Errorf("client 1 paid %v baselines, want > 9", fr)
	}
	if k := Inversions(p.Values, p.Payouts); k != 0 {
		t.Errorf("%d inversions", k)
	}
	failed, err := JobPay(Valued{Rounds: v.Rounds, Totals: v.Totals, Err: "boom"}, 0.1)
	if err != nil || !hasNaN(failed.Payouts) {
		t.Errorf("a failed run paid %v, %v; want NaN", failed.Payouts, err)
	}
}

// TestPayMetrics: inversions, the duplicate pair's ratio through the map
// to the job without the copy, and the Sybil's gain of the budget.
func TestPayMetrics(t *testing.T) {
	if k := Inversions([]float64{3, 2, 1}, []float64{0.1, 0.5, 0.4}); k != 2 {
		t.Errorf("Inversions = %d, want 2 (0 below 1 and 2)", k)
	}
	// Client 2 copies client 0; without it client 0 is paid 0.4.
	with, without := []float64{0.25, 0.3, 0.2}, []float64{0.4, 0.6}
	if r := DuplicatePay(with, without, [][2]int{{2, 0}}, []int{0, 1, -1}); math.Abs(r-0.45/0.4) > 1e-12 {
		t.Errorf("DuplicatePay = %v, want %v", r, 0.45/0.4)
	}
	if g := SybilPay([]float64{0.3, 0.7}, 0, []float64{0.1, 0.5, 0.2, 0.2}, []int{0, 2, 3}); math.Abs(g-0.2) > 1e-12 {
		t.Errorf("SybilPay = %v, want 0.2", g)
	}
	if rho := PaySpearman([]float64{0.1, 0.9, 0.3, 0.5}, []float64{1, 4, 2, -1}, []bool{true, true, true, false}); math.Abs(rho-1) > 1e-12 {
		t.Errorf("PaySpearman = %v, want 1 over the honest clients", rho)
	}
}

// TestPayColumns runs duplicates-bc5 (client 4 a copy of client 0) and
// sybil-bc5 for two rounds: the duplicate scenario gets its run without
// the copy (client 4 dropped, clients 0–3 at their indices), so that
// duplicate_pay is a finite ratio, and values.csv holds that run's rows;
// the Sybil scenario's sybil_pay is the split client's payout gain.
func TestPayColumns(t *testing.T) {
	dup := run(t, load(t, "duplicates-bc5", 2, 1), Options{Methods: mustMethods(t, "exact-shapley"), Modes: []string{ModePlain}})[0]
	if dup.AloneRef == nil || len(dup.AloneRef.Totals) != 4 {
		t.Fatalf("no run without the copy of 4 clients: %+v", dup.AloneRef)
	}
	if want := []int{0, 1, 2, 3, -1}; !slices.Equal(dup.AloneOf, want) {
		t.Errorf("AloneOf = %v, want %v", dup.AloneOf, want)
	}
	for _, m := range Evaluate(dup) {
		if !(m.DuplicatePay > 0.5 && m.DuplicatePay < 2) || !math.IsNaN(m.SybilPay) || !math.IsNaN(m.FreeRiderPay) {
			t.Errorf("%s %s: duplicate_pay %v, sybil_pay %v, freerider_pay %v", m.Mode, m.Method, m.DuplicatePay, m.SybilPay, m.FreeRiderPay)
		}
	}
	var b bytes.Buffer
	if err := WriteValues(&b, []SeedRun{dup}); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(b.String(), ",alone,"); n != 2*4 {
		t.Errorf("values.csv has %d rows of the alone run, want 8 (reference and exact Shapley, 4 clients)", n)
	}
	syb := run(t, load(t, "sybil-bc5", 2, 1), Options{Methods: mustMethods(t, "exact-shapley"), Modes: []string{ModePlain}})[0]
	m := Evaluate(syb)[0]
	base, _ := JobPay(syb.Reference, PayBaselineShare)
	split, _ := JobPay(*syb.SybilRef, PayBaselineShare)
	want := split.Payouts[0] + split.Payouts[5] + split.Payouts[6] - base.Payouts[0]
	if math.Abs(m.SybilPay-want) > 1e-12 || !math.IsNaN(m.DuplicatePay) {
		t.Errorf("sybil_pay %v, want %v; duplicate_pay %v", m.SybilPay, want, m.DuplicatePay)
	}
}
