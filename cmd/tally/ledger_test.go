package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// simulatedLedger runs a 4-client simulation of rounds rounds in the clear
// into a state file, checks that it verifies, and returns its path.
func simulatedLedger(t *testing.T, rounds int) string {
	t.Helper()
	db := filepath.Join(t.TempDir(), "state.db")
	var out bytes.Buffer
	if code := run(simulateArgs(db, rounds), &out, &out); code != 0 {
		t.Fatalf("simulate: exit %d\n%s", code, out.String())
	}
	out.Reset()
	if code := run([]string{"ledger", "verify", "--db", db}, &out, &out); code != 0 {
		t.Fatalf("untouched ledger: exit %d\n%s", code, out.String())
	}
	return db
}

func simulateArgs(db string, rounds int) []string {
	return []string{"simulate", "--clients", "4", "--rounds", strconv.Itoa(rounds), "--secure-aggregation", "none", "--quiet", "--centralised=false", "--db", db}
}

// TestLedgerVerifyNamesTamperedReceipt flips one byte of one stored
// receipt in a coordinator's state file, as someone editing the file would,
// and expects `tally ledger verify` to fail and name that receipt.
func TestLedgerVerifyNamesTamperedReceipt(t *testing.T) {
	db := simulatedLedger(t, 3)
	var out bytes.Buffer
	raw, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	// The receipt of round 2 for client-1: change one digit of its value.
	// bbolt writes copy-on-write, so the file may also hold stale copies of
	// the page in free space: change every copy, or the live one may be
	// left intact (editing only the first copy passed verification about
	// one run in twelve).
	re := regexp.MustCompile(`"seq":(\d+),"job":"simulation","round":2,"client":"client-1".*?"value":-?\d`)
	locs := re.FindAllIndex(raw, -1)
	if locs == nil {
		t.Fatal("the receipt of round 2, client-1 is not in the file")
	}
	seq := re.FindSubmatch(raw[locs[0][0]:locs[0][1]])[1]
	for _, loc := range locs {
		i := loc[1] - 1 // the first digit of the value
		if raw[i] == '9' {
			raw[i] = '8'
		} else {
			raw[i]++
		}
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

// TestLedgerVerifyRefusesDamagedFile: tally ledger verify fails, naming
// the file and the problem, on a state file that is empty, cut to half
// its pages, has a bit flipped in a data page, or in one meta page (which
// bbolt would silently skip, opening the previous transaction). Before,
// it reported the half file's receipts as a chain intact.
func TestLedgerVerifyRefusesDamagedFile(t *testing.T) {
	db := simulatedLedger(t, 3)
	cases := append(damages[:len(damages):len(damages)], struct {
		name   string
		damage func(raw []byte) []byte
		want   string
	}{"bit-flip-meta-page", func(raw []byte) []byte { raw[40] ^= 1; return raw }, "meta page 0: checksum mismatch"})
	for _, d := range cases {
		t.Run(d.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "damaged.db")
			before := writeDamaged(t, db, path, d.damage)
			var out bytes.Buffer
			code := run([]string{"ledger", "verify", "--db", path}, &out, &out)
			if code != 1 || !strings.Contains(out.String(), path) || !strings.Contains(out.String(), d.want) {
				t.Errorf("verify of a %s file: exit %d, want 1 naming %s and %q:\n%s", d.name, code, path, d.want, out.String())
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
				t.Errorf("verify modified the file")
			}
			t.Log(strings.TrimSpace(out.String()))
		})
	}
}

// TestLedgerBackup: tally ledger backup writes a copy that verifies and
// holds every receipt, and leaves the original untouched; a backup of a
// damaged file, or onto the file itself, is refused. That a coordinator
// resumes from a copy is TestCoordinatorRefusesDamagedOrChangedState's
// last step (tally simulate cannot resume: its clients are new each run).
func TestLedgerBackup(t *testing.T) {
	db := simulatedLedger(t, 3)
	orig, _ := os.ReadFile(db)
	cp := filepath.Join(t.TempDir(), "copy.db")
	var out bytes.Buffer
	// 3 rounds of 4 clients and the job's settlement, one per client.
	if code := run([]string{"ledger", "backup", "--db", db, "--out", cp}, &out, &out); code != 0 || !strings.Contains(out.String(), "16 receipts") {
		t.Fatalf("backup: exit %d\n%s", code, out.String())
	}
	t.Log(strings.TrimSpace(out.String()))
	out.Reset()
	if code := run([]string{"ledger", "verify", "--db", cp}, &out, &out); code != 0 || !strings.Contains(out.String(), "16 receipts over 3 rounds") {
		t.Fatalf("the copy does not verify: exit %d\n%s", code, out.String())
	}
	if now, _ := os.ReadFile(db); !bytes.Equal(now, orig) {
		t.Errorf("backup modified the original")
	}
	out.Reset()
	if code := run([]string{"ledger", "backup", "--db", db, "--out", db}, &out, &out); code != 1 || !strings.Contains(out.String(), "onto itself") {
		t.Errorf("backup onto itself: exit %d\n%s", code, out.String())
	}
	bad := filepath.Join(t.TempDir(), "bad.db")
	writeDamaged(t, db, bad, damages[1].damage)
	out.Reset()
	if code := run([]string{"ledger", "backup", "--db", bad, "--out", filepath.Join(t.TempDir(), "c.db")}, &out, &out); code != 1 || !strings.Contains(out.String(), "is truncated") {
		t.Errorf("backup of a truncated file: exit %d\n%s", code, out.String())
	}
}
