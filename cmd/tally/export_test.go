package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSimulateExportGames: --export-games writes one CSV per round, with
// a row for every coalition exact Shapley evaluated (2^4 for 4 clients),
// in the projection mode computed in the clear.
func TestSimulateExportGames(t *testing.T) {
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	if code := run([]string{"simulate", "--clients", "4", "--rounds", "2", "--secure-aggregation", "none", "--valuation-mode", "projection",
		"--quiet", "--centralised=false", "--export-games", dir}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, name := range []string{"round-001.csv", "round-002.csv"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if lines[0] != "bitmask,players,clients,utility" || len(lines) != 1+16 {
			t.Errorf("%s: header %q and %d rows, want the header and 16", name, lines[0], len(lines)-1)
		}
	}
}
