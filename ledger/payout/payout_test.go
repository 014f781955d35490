package payout

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*max(1, math.Abs(a), math.Abs(b)) }

func nearAll(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !near(a[i], b[i]) {
			return false
		}
	}
	return true
}

func TestPayouts(t *testing.T) {
	nan := math.NaN()
	cases := []struct {
		name    string
		values  []float64
		budget  float64
		share   float64
		valid   []bool
		want    []float64
		unspent float64
	}{
		{"proportional", []float64{1, 3}, 100, 0, nil, []float64{25, 75}, 0},
		{"negatives_get_zero", []float64{-1, 2, 2, 0}, 100, 0, nil, []float64{0, 50, 50, 0}, 0},
		{"baseline", []float64{1, 3}, 100, 0.2, nil, []float64{30, 70}, 0},
		{"baseline_to_negative_valid", []float64{-5, 1}, 100, 0.5, nil, []float64{25, 75}, 0},
		{"all_baseline", []float64{1, 3, -2}, 90, 1, nil, []float64{30, 30, 30}, 0},
		{"no_positive_value/unspent", []float64{-1, 0}, 100, 0.3, nil, []float64{15, 15}, 70},
		{"no_positive_no_baseline", []float64{-1, -3}, 100, 0, nil, []float64{0, 0}, 100},
		{"invalid_gets_nothing", []float64{5, 5}, 100, 0.5, []bool{true, false}, []float64{100, 0}, 0},
		{"invalid_nan_ignored", []float64{nan, 1, 3}, 80, 0, []bool{false, true, true}, []float64{0, 20, 60}, 0},
		{"invalid_high_value_ignored", []float64{100, 1}, 10, 0, []bool{false, true}, []float64{0, 10}, 0},
		{"none_valid", []float64{1, 2}, 100, 0.25, []bool{false, false}, []float64{0, 0}, 100},
		{"no_clients", nil, 50, 0.5, nil, []float64{}, 50},
		{"zero_budget", []float64{1, 2}, 0, 0.5, nil, []float64{0, 0}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, unspent, err := Payouts(c.values, c.budget, c.share, c.valid)
			if err != nil {
				t.Fatal(err)
			}
			if !nearAll(got, c.want) || !near(unspent, c.unspent) {
				t.Errorf("Payouts = %v, unspent %v; want %v, %v", got, unspent, c.want, c.unspent)
			}
			credits, err := Quotas(c.values, c.budget, c.share, c.valid)
			if err != nil || !slices.Equal(credits, got) {
				t.Errorf("Quotas = %v, %v; want the payouts' split %v", credits, err, got)
			}
		})
	}
}

func TestPayoutsRefuseBadParameters(t *testing.T) {
	cases := []struct {
		name   string
		values []float64
		budget float64
		share  float64
		valid  []bool
	}{
		{"flags_length", []float64{1, 2}, 1, 0, []bool{true}},
		{"negative_budget", []float64{1}, -1, 0, nil},
		{"inf_budget", []float64{1}, math.Inf(1), 0, nil},
		{"nan_budget", []float64{1}, math.NaN(), 0, nil},
		{"share_above_one", []float64{1}, 1, 1.5, nil},
		{"negative_share", []float64{1}, 1, -0.1, nil},
		{"nan_share", []float64{1}, 1, math.NaN(), nil},
		{"nan_valid_value", []float64{1, math.NaN()}, 1, 0, nil},
		{"inf_valid_value", []float64{math.Inf(1), 1}, 1, 0, []bool{true, true}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, _, err := Payouts(c.values, c.budget, c.share, c.valid); !errors.Is(err, ErrAllocation) {
				t.Errorf("Payouts = %v, want ErrAllocation", err)
			}
			if _, err := Quotas(c.values, c.budget, c.share, c.valid); !errors.Is(err, ErrAllocation) {
				t.Errorf("Quotas = %v, want ErrAllocation", err)
			}
		})
	}
}

// Properties over random rounds: the budget is conserved, nobody gets a
// negative amount, invalid submissions get nothing, a valid one with a
// non-positive value gets exactly the baseline, higher value never pays
// less, and payouts do not depend on the unit of the values.
func TestPayoutsProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 1))
	for trial := range 500 {
		n := 1 + rng.IntN(20)
		values := make([]float64, n)
		valid := make([]bool, n)
		for i := range values {
			values[i] = rng.NormFloat64()
			valid[i] = rng.Float64() < 0.8
		}
		budget := 1000 * rng.Float64()
		share := []float64{0, 0.1, 0.5, 1, rng.Float64()}[trial%5]
		name := fmt.Sprintf("trial=%d/n=%d/share=%.2f", trial, n, share)
		pay, unspent, err := Payouts(values, budget, share, valid)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		scaled := make([]float64, n)
		for i, v := range values {
			scaled[i] = 37.5 * v
		}
		pay2, _, _ := Payouts(scaled, budget, share, valid)

		var sum, positive float64
		m := 0
		for i := range pay {
			sum += pay[i]
			if valid[i] {
				m++
				positive += max(values[i], 0)
			}
		}
		if !near(sum+unspent, budget) {
			t.Fatalf("%s: paid %v + unspent %v ≠ budget %v", name, sum, unspent, budget)
		}
		if positive > 0 && m > 0 && !near(sum, budget) {
			t.Fatalf("%s: some valid value is positive but only %v of %v paid", name, sum, budget)
		}
		base := 0.0
		if m > 0 {
			base = share * budget / float64(m)
		}
		for i := range pay {
			switch {
			case pay[i] < 0:
				t.Fatalf("%s: payout %d is negative: %v", name, i, pay[i])
			case !valid[i] && pay[i] != 0:
				t.Fatalf("%s: invalid submission %d paid %v", name, i, pay[i])
			case valid[i] && values[i] <= 0 && !near(pay[i], base):
				t.Fatalf("%s: non-positive value %d paid %v, want the baseline %v", name, i, pay[i], base)
			case !near(pay[i], pay2[i]):
				t.Fatalf("%s: payout %d changes with the unit of values: %v vs %v", name, i, pay[i], pay2[i])
			}
			for j := range pay {
				if valid[i] && valid[j] && values[i] > values[j] && pay[i] < pay[j] {
					t.Fatalf("%s: higher value %d paid less than %d", name, i, j)
				}
			}
		}
	}
}

func TestBasketCredit(t *testing.T) {
	cases := []struct {
		name               string
		basket             Basket
		amount             float64
		credited, overflow float64
		balance            float64
	}{
		{"fits", Basket{Capacity: 10}, 4, 4, 0, 4},
		{"fills_exactly", Basket{Capacity: 10, Balance: 6}, 4, 4, 0, 10},
		{"overflow_lost", Basket{Capacity: 10, Balance: 8}, 5, 2, 3, 10},
		{"full", Basket{Capacity: 10, Balance: 10}, 1, 0, 1, 10},
		{"above_lowered_capacity", Basket{Capacity: 10, Balance: 12}, 1, 0, 1, 12},
		{"zero_basket", Basket{}, 3, 0, 3, 0},
		{"zero_credit", Basket{Capacity: 1}, 0, 0, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.basket
			credited, overflow := b.Credit(c.amount)
			if credited != c.credited || overflow != c.overflow || b.Balance != c.balance {
				t.Errorf("Credit(%v) = %v, %v, balance %v; want %v, %v, %v", c.amount, credited, overflow, b.Balance, c.credited, c.overflow, c.balance)
			}
		})
	}
	for _, bad := range []float64{-1, math.NaN(), math.Inf(1)} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Credit(%v) did not panic", bad)
				}
			}()
			b := Basket{Capacity: 1}
			b.Credit(bad)
		}()
	}
}

// Over many periods a basket never holds more than its capacity, and what
// it was offered is exactly what it holds, spent, or lost.
func TestBasketConservesCredits(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	b := Basket{Capacity: 5}
	var offered, lost, spent float64
	for range 1000 {
		a := 2 * rng.Float64()
		_, o := b.Credit(a)
		offered, lost = offered+a, lost+o
		if s := 2.5 * rng.Float64(); b.Spend(s) == nil {
			spent += s
		}
		if b.Balance > b.Capacity || b.Balance < 0 {
			t.Fatalf("balance %v outside [0, %v]", b.Balance, b.Capacity)
		}
	}
	if !near(offered, b.Balance+spent+lost) || lost == 0 {
		t.Errorf("offered %v ≠ balance %v + spent %v + lost %v (lost must be > 0 here)", offered, b.Balance, spent, lost)
	}
}

func TestBasketSpend(t *testing.T) {
	cases := []struct {
		name    string
		amount  float64
		err     error
		balance float64
	}{
		{"part", 3, nil, 2},
		{"all", 5, nil, 0},
		{"too_much", 5.5, ErrInsufficientQuota, 5},
		{"negative", -1, ErrAmount, 5},
		{"nan", math.NaN(), ErrAmount, 5},
		{"inf", math.Inf(1), ErrAmount, 5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := Basket{Capacity: 10, Balance: 5}
			err := b.Spend(c.amount)
			if !errors.Is(err, c.err) || (c.err == nil) != (err == nil) || b.Balance != c.balance {
				t.Errorf("Spend(%v) = %v, balance %v; want %v, %v", c.amount, err, b.Balance, c.err, c.balance)
			}
		})
	}
}

// TestCredit: a round with a positive realised gain counts as valued; one
// whose values sum to ≤ 0 keeps only its negative values.
func TestCredit(t *testing.T) {
	cases := []struct {
		name   string
		values []float64
		want   []float64
	}{
		{"gain", []float64{0.5, -0.1, 0}, []float64{0.5, -0.1, 0}},
		{"loss", []float64{0.4, -0.6, 0.1}, []float64{0, -0.6, 0}},
		{"zero_gain", []float64{0.2, -0.2}, []float64{0, -0.2}},
		{"empty", nil, []float64{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Credit(c.values); !nearAll(got, c.want) {
				t.Errorf("Credit(%v) = %v, want %v", c.values, got, c.want)
			}
		})
	}
}

// TestPeriodConservation: over random periods, what the baselines of done
// rounds pay plus what their escrow settles (paid + unspent) is exactly
// Committed(done), and a total ≤ 0 is paid nothing from the escrow.
func TestPeriodConservation(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	for trial := range 500 {
		p := Period{Budget: 1000 * rng.Float64(), Rounds: 1 + rng.IntN(30), BaselineShare: rng.Float64()}
		done := rng.IntN(p.Rounds + 1)
		n := 1 + rng.IntN(10)
		values := make([]float64, n)
		weights := make([]float64, n)
		for i := range values {
			values[i] = rng.NormFloat64()
			if rng.IntN(4) > 0 {
				weights[i] = float64(rng.IntN(500))
			}
		}
		var total float64
		prepaid := make([]float64, n)
		for range done {
			each, unspent, err := p.Baseline(weights)
			if err != nil {
				t.Fatal(err)
			}
			for i, x := range each {
				total += x
				prepaid[i] += x
			}
			total += unspent
		}
		pays, _, unspent, err := p.Settle(values, prepaid, nil, done, 10)
		if err != nil {
			t.Fatal(err)
		}
		for i, x := range pays {
			total += x
			if values[i] <= 0 && x != 0 {
				t.Fatalf("trial %d: total %v paid %v from escrow", trial, values[i], x)
			}
		}
		var maxb, need float64
		for _, b := range prepaid {
			maxb = max(maxb, b)
		}
		for i, v := range values {
			if v > 0 {
				need += maxb - prepaid[i]
			}
		}
		if p.Escrow(done) >= need {
			// Raising every positive client to the largest baseline costs
			// at most need, so the escrow covers the levelling and the
			// order holds (Level).
			if k := Inverted(values, prepaid, pays); k > 0 {
				t.Fatalf("trial %d: %d pairs paid against their values: V %v, prepaid %v, pays %v", trial, k, values, prepaid, pays)
			}
		}
		if total += unspent; !near(total, p.Committed(done)) {
			t.Fatalf("trial %d: %+v done %d: baselines + settlement = %v, committed %v", trial, p, done, total, p.Committed(done))
		}
	}
}

// TestBaselineBySybilSplit: a holder that splits its rows among three
// identities is paid the same baseline as whole, and the others the same
// as before; the split equally by identities that this replaced paid the
// three s·(3/7 − 1/5) more (+0.0229 of the budget at s = 0.1, n = 5).
func TestBaselineBySybilSplit(t *testing.T) {
	p := Period{Budget: 1, Rounds: 1, BaselineShare: 0.1}
	whole, _, err := p.Baseline([]float64{90, 100, 100, 100, 100})
	if err != nil {
		t.Fatal(err)
	}
	split, _, err := p.Baseline([]float64{30, 100, 100, 100, 100, 30, 30})
	if err != nil {
		t.Fatal(err)
	}
	if got := split[0] + split[5] + split[6]; !near(got, whole[0]) {
		t.Errorf("the three identities are paid %v together, the holder whole %v", got, whole[0])
	}
	for i := 1; i < 5; i++ {
		if !near(split[i], whole[i]) {
			t.Errorf("client %d is paid %v beside the split, %v beside the whole", i, split[i], whole[i])
		}
	}
}

func TestBaselineRefusesBadWeights(t *testing.T) {
	p := Period{Budget: 1, Rounds: 2, BaselineShare: 0.5}
	for _, w := range [][]float64{{1, -1}, {math.NaN()}, {math.Inf(1)}} {
		if _, _, err := p.Baseline(w); !errors.Is(err, ErrAllocation) {
			t.Errorf("weights %v: err = %v, want ErrAllocation", w, err)
		}
	}
	each, unspent, err := p.Baseline([]float64{0, 0})
	if err != nil || each[0] != 0 || each[1] != 0 || !near(unspent, 0.25) {
		t.Errorf("zero weights: each %v unspent %v err %v, want nothing paid and the round's 0.25 unspent", each, unspent, err)
	}
}

// TestCreditRoundingIsNoGain: a round whose values cancel but for the
// rounding of their sum (0.1 + 0.2 − 0.3 = +5.6e-17 in float64) made the
// model no better, whatever the order of the sum; before the tolerance
// one order credited 0.1 and 0.2 and the other nothing.
func TestCreditRoundingIsNoGain(t *testing.T) {
	for _, values := range [][]float64{{0.1, 0.2, -0.3}, {0.3, -0.1, -0.2}, {-0.3, 0.2, 0.1}} {
		got := Credit(values)
		for i, v := range values {
			if want := min(v, 0); got[i] != want {
				t.Errorf("Credit(%v)[%d] = %v, want %v: a gain of rounding credited", values, i, got[i], want)
			}
		}
	}
	if got := Credit([]float64{0.1, 0.2, -0.3 + 1e-6}); got[0] != 0.1 {
		t.Errorf("a gain of 1e-6 is not credited: %v", got)
	}
}
