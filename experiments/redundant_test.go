package experiments

import (
	"context"
	"testing"

	"github.com/tallyfl/tally/ledger/payout"
)

// valueFederation trains and values fed in plain mode with exact Shapley
// and returns the reference's totals.
func valueFederation(t *testing.T, sc Scenario, seed uint64, fed *federation) []float64 {
	t.Helper()
	tr, err := runFedAvg(sc, seed, fed)
	if err != nil {
		t.Fatal(err)
	}
	ref, _, err := valueTrace(context.Background(), sc, seed, tr, mustMethods(t, "exact-shapley"), []string{ModePlain}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ref.Totals
}

// payShares is each client's share of a budget of 1 under the end-of-job
// rule (values.csv's payout column).
func payShares(t *testing.T, totals []float64) []float64 {
	t.Helper()
	pay, _, err := payout.Payouts(totals, 1, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	return pay
}

// TestRetrainedCopyEarnsOnce: client 4 holds client 0's rows but trains
// with its own shuffles (duplicates-retrained-bc5). Together the two must
// be paid at most 1.1× what client 0 is paid in the same job without the
// copy (issue 15's acceptance), on seeds 1–5.
func TestRetrainedCopyEarnsOnce(t *testing.T) {
	sc := load(t, "duplicates-retrained-bc5", 0, 1, 2, 3, 4, 5)
	for _, seed := range sc.Seeds {
		fed, err := newFederation(sc, seed, false)
		if err != nil {
			t.Fatal(err)
		}
		with := payShares(t, valueFederation(t, sc, seed, fed))
		// The same job without the copy: clients 0–3 with the same rows.
		alone, err := newFederation(sc, seed, false)
		if err != nil {
			t.Fatal(err)
		}
		alone.clients, alone.corruptions, alone.weights = alone.clients[:4], alone.corruptions[:4], alone.weights[:4]
		without := payShares(t, valueFederation(t, sc, seed, alone))
		ratio := (with[0] + with[4]) / without[0]
		t.Logf("seed %d: original %.3f + copy %.3f of the budget, original alone %.3f: ratio %.2f", seed, with[0], with[4], without[0], ratio)
		if ratio > 1.1 {
			t.Errorf("seed %d: the original and its retrained copy take %.2f× what the original takes without the copy, want ≤ 1.1", seed, ratio)
		}
	}
}

// TestSybilGainBounded: client 0 splits its rows among three identities
// (sybil-bc5). Its share of the total value under plain exact Shapley may
// rise by at most 0.02 (issue 15's acceptance), on seeds 1–5.
func TestSybilGainBounded(t *testing.T) {
	sc := load(t, "sybil-bc5", 0, 1, 2, 3, 4, 5)
	for _, seed := range sc.Seeds {
		base, err := newFederation(sc, seed, false)
		if err != nil {
			t.Fatal(err)
		}
		split, err := newFederation(sc, seed, true)
		if err != nil {
			t.Fatal(err)
		}
		gain := SybilGain(valueFederation(t, sc, seed, base), sc.Sybil.Client, valueFederation(t, sc, seed, split), split.sybils)
		t.Logf("seed %d: the split client's share of the total value changes by %+.3f", seed, gain)
		if gain > 0.02 {
			t.Errorf("seed %d: splitting client %d into %d identities raises its share by %+.3f, want ≤ +0.02", seed, sc.Sybil.Client, sc.Sybil.Parts, gain)
		}
	}
}
