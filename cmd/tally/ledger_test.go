package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestLedgerVerifyNamesTamperedReceipt flips one byte of one stored
// receipt in a coordinator's state file, as someone editing the file would,
// and expects `tally ledger verify` to fail and name that receipt.
func TestLedgerVerifyNamesTamperedReceipt(t *testing.T) {
	db := filepath.Join(t.TempDir(), "state.db")
	var out bytes.Buffer
	if code := run([]string{"simulate", "--clients", "4", "--rounds", "3", "--secure-aggregation", "none", "--quiet", "--centralised=false", "--db", db}, &out, &out); code != 0 {
		t.Fatalf("simulate: exit %d\n%s", code, out.String())
	}
	out.Reset()
	if code := run([]string{"ledger", "verify", "--db", db}, &out, &out); code != 0 {
		t.Fatalf("untouched ledger: exit %d\n%s", code, out.String())
	}
	raw, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	// The receipt of round 2 for client-1: change one digit of its value.
	re := regexp.MustCompile(`"seq":(\d+),"job":"simulation","round":2,"client":"client-1".*?"value":-?\d`)
	loc := re.FindIndex(raw)
	if loc == nil {
		t.Fatal("the receipt of round 2, client-1 is not in the file")
	}
	seq := re.FindSubmatch(raw[loc[0]:loc[1]])[1]
	i := loc[1] - 1 // the first digit of the value
	if raw[i] == '9' {
		raw[i] = '8'
	} else {
		raw[i]++
	}
	if err := os.WriteFile(db, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := run([]string{"ledger", "verify", "--db", db}, &out, &out); code != 1 {
		t.Fatalf("tampered ledger: exit %d, want 1\n%s", code, out.String())
	}
	for _, want := range []string{"receipt seq " + string(seq), "round 2", `client "client-1"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("verify output does not name the tampered receipt (%q):\n%s", want, out.String())
		}
	}
	t.Log(strings.TrimSpace(out.String()))
}
