package audit

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tallyfl/tally/engine"
)

// TestReleaseLogSurvivesATornWrite: a log cut in the middle of a record
// (a crash mid-write) reads without that record, says it was torn, and is
// continued after it by a restarted coordinator; an edited record fails
// its checksum, naming the line; another job's log is refused.
func TestReleaseLogSurvivesATornWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "releases.log")
	h := ReleaseLogHeader{Job: "j", Source: "coordinator", Features: 2, Classes: 2}
	l, err := OpenReleaseLog(path, h)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := l.Append(engine.Release{Seq: i, Purpose: "round", Values: []float64{0.1 * float64(i), 1e-300}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	whole, _ := os.ReadFile(path)
	if err := os.WriteFile(path, whole[:len(whole)-20], 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ReadReleaseLog(path)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Torn || len(got.Releases) != 2 || got.Releases[1].Values[1] != 1e-300 || got.Header.Job != "j" {
		t.Fatalf("torn log read as torn=%v with %d releases %+v", got.Torn, len(got.Releases), got.Releases)
	}
	if _, err := OpenReleaseLog(path, ReleaseLogHeader{Job: "other"}); !errors.Is(err, ErrReleaseLog) {
		t.Fatalf("another job's log opened: %v", err)
	}
	l, err = OpenReleaseLog(path, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Append(engine.Release{Seq: 2, Purpose: "influence", Values: []float64{3}}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	got, err = ReadReleaseLog(path)
	if err != nil || got.Torn || len(got.Releases) != 3 || got.Releases[2].Purpose != "influence" {
		t.Fatalf("continued log: %+v, %v", got, err)
	}
	b, _ := os.ReadFile(path)
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), `"purpose":"influence"`, `"purpose":"round"`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadReleaseLog(path); !errors.Is(err, ErrReleaseLog) || !strings.Contains(err.Error(), "line 4: checksum") {
		t.Fatalf("an edited record read: %v", err)
	}
}
