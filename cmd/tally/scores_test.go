package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// TestScoresApplyDecay: for a job with valuation.decay 0.7, `tally scores`
// over the signed receipts must print the coordinator's final standings
// (the report's contributions): the same values, payouts and ranks. It
// summed the rounds without the decay.
func TestScoresApplyDecay(t *testing.T) {
	dir := t.TempDir()
	db, report := filepath.Join(dir, "state.db"), filepath.Join(dir, "report.json")
	var out bytes.Buffer
	args := []string{"simulate", "--dataset", "breast-cancer", "--clients", "4", "--rounds", "6", "--seed", "3", "--secure-aggregation", "none",
		"--decay", "0.7", "--baseline-share", "0.2", "--centralised=false", "--db", db, "--report", report}
	if code := run(args, &out, &out); code != 0 {
		t.Fatalf("simulate: exit %d\n%s", code, out.String())
	}
	raw, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var rep simReport
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := run([]string{"scores", "--db", db, "--format", "json"}, &out, &out); code != 0 {
		t.Fatalf("scores: exit %d\n%s", code, out.String())
	}
	var rows []struct {
		Client string  `json:"client"`
		Value  float64 `json:"value"`
		Rank   int     `json:"rank"`
		Payout float64 `json:"payout"`
	}
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(rows) != len(rep.Contributions) {
		t.Fatalf("scores has %d clients, the coordinator %d", len(rows), len(rep.Contributions))
	}
	for i, c := range rep.Contributions {
		s := rows[i]
		t.Logf("%s: coordinator value %.6f payout %.4f; scores %s value %.6f payout %.4f", c.Client, c.Value, c.Payout, s.Client, s.Value, s.Payout)
		if s.Client != c.Client || s.Rank != c.Rank || math.Abs(s.Value-c.Value) > 1e-12 || math.Abs(s.Payout-c.Payout) > 1e-9 {
			t.Errorf("rank %d: scores says %s value %v payout %v, the coordinator %s value %v payout %v", i+1, s.Client, s.Value, s.Payout, c.Client, c.Value, c.Payout)
		}
	}
}
