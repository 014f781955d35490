package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tallyfl/tally/audit"
)

// TestAuditJobAttacksWhatWasReleased runs a tiny simulate job under he
// with a release log and audits it. Clients 1 and 2 are zero free riders
// (Sybils of the coordinator's), so each round's decrypted sum of k = 3
// is in fact client 0's update of 6 rows alone: the k = 1-like baseline,
// on which the attack must beat
// random guessing by a clear margin (else the harness stopped attacking).
// Every release matches its transcript entry; a tampered release and a
// dropped one are each reported by name.
func TestAuditJobAttacksWhatWasReleased(t *testing.T) {
	dir := t.TempDir()
	db, logPath := filepath.Join(dir, "job.db"), filepath.Join(dir, "releases.log")
	if _, err := simulate(context.Background(), simOpts(t, "--dataset", "digits", "--model", "mlp", "--clients", "3", "--rounds", "2",
		"--corrupt", "1=free-rider:zero", "--corrupt", "2=free-rider:zero", "--val-frac", "0.4", "--test-frac", "0.59",
		"--centralised=false", "--round-timeout", "5m", "--db", db, "--release-log", logPath,
		// Influence mode, one scalar per client a round: this test counts
		// and attacks those; TestAuditJobProjectionScalars does the
		// projection mode's (the he default).
		"--valuation-mode", "influence"), io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	lc, err := audit.ReadReleaseLog(logPath)
	if err != nil {
		t.Fatal(err)
	}
	purposes := map[string]int{}
	for _, r := range lc.Releases {
		purposes[r.Purpose]++
	}
	if purposes["moments"] != 1 || purposes["round"] != 2 || purposes["influence"] != 6 {
		t.Fatalf("releases by purpose %v; want the moments, 2 round sums and 2 influence scalars a round", purposes)
	}
	var out bytes.Buffer
	if err := runAuditJob(context.Background(), []string{"--release-log", logPath, "--state", db, "--match-iters", "0", "--report", filepath.Join(dir, "audit.md")}, &out, io.Discard); err != nil {
		t.Fatalf("audit of an untouched log: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), fmt.Sprintf("%d releases match their entry", len(lc.Releases))) || !strings.Contains(out.String(), " 0 findings") {
		t.Fatalf("the untouched log does not match the transcript:\n%s", out.String())
	}
	// The round-1 sum, which only client 0 trained for.
	psnr, psnrG, ssim, ssimG := tableCells(t, out.String(), "sum of the round's updates (he), round 1")
	t.Logf("round 1 (k = 3, two of them zero free riders): PSNR %.1f dB (guess %.1f), SSIM %.3f (guess %.3f)", psnr, psnrG, ssim, ssimG)
	if psnr < psnrG+5 || ssim < ssimG+0.1 {
		t.Errorf("the attack on a one-client release does not beat guessing clearly: PSNR %.1f vs %.1f, SSIM %.3f vs %.3f", psnr, psnrG, ssim, ssimG)
	}
	if _, err := os.Stat(filepath.Join(dir, "audit.md")); err != nil {
		t.Errorf("--report: %v", err)
	}

	// Tamper: client 1's influence scalar claimed for client 0; and the
	// last round sum dropped.
	lines := strings.SplitAfter(readFile(t, logPath), "\n")
	lines = lines[:len(lines)-1] // after the last newline
	var edited []string
	tampered, dropped := false, false
	for i, line := range lines {
		if i == 0 {
			edited = append(edited, line)
			continue
		}
		body, _, _ := strings.Cut(strings.TrimSuffix(line, "\n"), "\t")
		var rec map[string]map[string]any
		if err := json.Unmarshal([]byte(body), &rec); err != nil {
			t.Fatal(err)
		}
		r := rec["release"]
		switch {
		case r["purpose"] == "round" && r["round"] == float64(2) && !dropped:
			dropped = true
			continue
		case r["purpose"] == "influence" && !tampered:
			tampered = true
			r["contributors"] = []string{"someone-else"}
			b, _ := json.Marshal(rec)
			sum := sha256.Sum256(b)
			line = string(b) + "\t" + hex.EncodeToString(sum[:]) + "\n"
		}
		edited = append(edited, line)
	}
	bad := filepath.Join(dir, "tampered.log")
	if err := os.WriteFile(bad, []byte(strings.Join(edited, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	err = runAuditJob(context.Background(), []string{"--release-log", bad, "--state", db, "--match-iters", "0"}, &out, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "2 disagreement") {
		t.Fatalf("audit of a tampered log = %v; want 2 disagreements\n%s", err, out.String())
	}
	for _, want := range []string{"influence, 1 contributors): does not match transcript entry", "[contributors] differ",
		"(round 2, round, 3 contributors) was decrypted but the log has no release of it"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the audit of the tampered log does not say %q:\n%s", want, out.String())
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// tableCells reads PSNR, its guess, SSIM and its guess from the markdown
// row whose release is named release.
func tableCells(t *testing.T, md, release string) (psnr, psnrG, ssim, ssimG float64) {
	t.Helper()
	for _, line := range strings.Split(md, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 12 || strings.TrimSpace(cells[2]) != release {
			continue
		}
		var v [4]float64
		for i := range v {
			if err := json.Unmarshal([]byte(strings.TrimSpace(cells[5+i])), &v[i]); err != nil {
				t.Fatalf("cell %q of %q: %v", cells[5+i], line, err)
			}
		}
		return v[0], v[1], v[2], v[3]
	}
	t.Fatalf("no row %q in:\n%s", release, md)
	return
}

// TestAuditJobProjectionScalars runs a tiny projection-mode simulate job
// with a release log and audits it: each client's 6 scalars a round
// (breast-cancer) are held to the vector digests their transcript entries commit
// to, against the public vectors rebuilt from each round's model and
// total, and attacked. A log whose round-2 total was altered (the vectors
// built from it are not those the scalars were taken against) has each
// scalar of that round against a vector the total enters (the total and
// the three gradients along its line; the two per-class parts are taken
// at the round's model) reported by name: 4 × 3 clients.
func TestAuditJobProjectionScalars(t *testing.T) {
	dir := t.TempDir()
	db, logPath := filepath.Join(dir, "job.db"), filepath.Join(dir, "releases.log")
	if _, err := simulate(context.Background(), simOpts(t, "--dataset", "breast-cancer", "--model", "logreg", "--clients", "3", "--rounds", "2",
		"--valuation-mode", "projection",
		"--centralised=false", "--round-timeout", "5m", "--db", db, "--release-log", logPath), io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	lc, err := audit.ReadReleaseLog(logPath)
	if err != nil {
		t.Fatal(err)
	}
	purposes := map[string]int{}
	for _, r := range lc.Releases {
		purposes[r.Purpose]++
	}
	if purposes["round"] != 2 || purposes["influence"] != 2*3*6 {
		t.Fatalf("releases by purpose %v; want 2 round sums and 6 scalars per client and round", purposes)
	}
	var out bytes.Buffer
	if err := runAuditJob(context.Background(), []string{"--release-log", logPath, "--state", db, "--match-iters", "0"}, &out, io.Discard); err != nil {
		t.Fatalf("audit of an untouched projection log: %v\n%s", err, out.String())
	}
	for _, want := range []string{" 0 findings", "| logreg | projection scalars of each client, 6 per round, 2 rounds (projection) | 1 |", "| projection |"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("the audit of the untouched projection log does not say %q:\n%s", want, out.String())
		}
	}

	lines := strings.SplitAfter(readFile(t, logPath), "\n")
	lines = lines[:len(lines)-1]
	for i, line := range lines[1:] {
		body, _, _ := strings.Cut(strings.TrimSuffix(line, "\n"), "\t")
		var rec map[string]map[string]any
		if err := json.Unmarshal([]byte(body), &rec); err != nil {
			t.Fatal(err)
		}
		r := rec["release"]
		if r["purpose"] != "round" || r["round"] != float64(2) {
			continue
		}
		vals := r["values"].([]any)
		vals[0] = vals[0].(float64) + 1e-3
		b, _ := json.Marshal(rec)
		sum := sha256.Sum256(b)
		lines[i+1] = string(b) + "\t" + hex.EncodeToString(sum[:]) + "\n"
	}
	bad := filepath.Join(dir, "tampered.log")
	if err := os.WriteFile(bad, []byte(strings.Join(lines, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	err = runAuditJob(context.Background(), []string{"--release-log", bad, "--state", db, "--match-iters", "0"}, &out, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "12 disagreement") {
		t.Fatalf("audit of a log with round 2's total altered = %v; want 12 disagreements\n%s", err, out.String())
	}
	if want := "round 2) of client"; !strings.Contains(out.String(), want) || !strings.Contains(out.String(), "is none of the round's 6 public vectors") {
		t.Errorf("the audit of the altered log does not name the round-2 scalars:\n%s", out.String())
	}
}
