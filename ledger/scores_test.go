package ledger

import (
	"math"
	"testing"
)

// A settlement's total is what the period was paid on: with copies
// valued as one (valuation.Redundancy) it is below the sum of the copies'
// round receipts, which carry each round's values before the job-level
// merge. Standings, and so `tally scores` and the dashboard, must count
// the settled total, decayed by the rounds after it, and the later
// unsettled rounds on top.
func TestStandingsCountSettledTotals(t *testing.T) {
	const d = 0.5
	round := func(r int, client string, v float64) Receipt {
		return Receipt{Job: "j", Round: r, Client: client, Value: v, Decay: d}
	}
	rs := []Receipt{
		round(1, "a", 0.6), round(1, "b", 0.6),
		round(2, "a", 0.2), round(2, "b", 0.2),
		// a and b were found to be copies: the period pays them as one.
		{Job: "j", Round: 2, FromRound: 1, Client: "a", Kind: KindSettlement, Value: 0.35, Payout: 10, Decay: d},
		{Job: "j", Round: 2, FromRound: 1, Client: "b", Kind: KindSettlement, Value: 0.35, Payout: 10, Decay: d},
		round(3, "a", 0.1), round(3, "b", 0.3),
	}
	want := map[string]float64{"a": 0.35*d + 0.1, "b": 0.35*d + 0.3}
	got := Standings(rs)
	if len(got) != 2 {
		t.Fatalf("Standings gave %d clients, want 2: %+v", len(got), got)
	}
	for _, s := range got {
		if math.Abs(s.Value-want[s.Client]) > 1e-12 {
			t.Errorf("client %s: value %.6f, want %.6f (settled 0.35 decayed once, plus round 3)", s.Client, s.Value, want[s.Client])
		}
		if s.Rounds != 3 || s.Payout != 10 {
			t.Errorf("client %s: %d rounds, payout %v; want 3 rounds, payout 10", s.Client, s.Rounds, s.Payout)
		}
	}
}

// Without settlements the total is the decayed sum of the rounds' credited
// values, and a round with no realised gain credits nobody.
func TestStandingsWithoutSettlements(t *testing.T) {
	const d = 0.5
	rs := []Receipt{
		{Job: "j", Round: 1, Client: "a", Value: 0.4, Decay: d}, {Job: "j", Round: 1, Client: "b", Value: 0.2, Decay: d},
		{Job: "j", Round: 2, Client: "a", Value: -0.3, Decay: d}, {Job: "j", Round: 2, Client: "b", Value: 0.1, Decay: d},
	}
	want := map[string]float64{"a": 0.4*d - 0.3, "b": 0.2 * d}
	for _, s := range Standings(rs) {
		if math.Abs(s.Value-want[s.Client]) > 1e-12 {
			t.Errorf("client %s: value %.6f, want %.6f", s.Client, s.Value, want[s.Client])
		}
	}
}
