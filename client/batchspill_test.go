package client

import (
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// crashEnv names the file a child of TestBatchSpillCrash writes its spill
// file's name to before it kills itself.
const crashEnv = "TALLY_TEST_BATCH_CRASH"

// TestBatchSpillCrash: a client process killed in the middle of a batch
// (kill -9, power loss: no deferred removal runs) leaves no spill file in
// its state directory. The test runs itself as a child process that
// answers the batch of runBatchMember and is killed (SIGKILL) once the
// batch is admitted, its ciphertexts all spilled and the file still open.
func TestBatchSpillCrash(t *testing.T) {
	if out := os.Getenv(crashEnv); out != "" {
		var name string
		runBatchMember(t, &batchHooks{
			spill: func(f *os.File) { name = f.Name() },
			admitted: func(f *os.File) {
				if err := os.WriteFile(out, []byte(name), 0o600); err != nil {
					t.Error(err)
				}
				p, err := os.FindProcess(os.Getpid())
				if err == nil {
					err = p.Kill()
				}
				t.Errorf("could not kill this process: %v", err)
				os.Exit(3)
			},
		}, nil)
		t.Fatal("the batch was never admitted")
	}
	if runtime.GOOS == "windows" {
		t.Skip("an open file cannot be removed on Windows: a killed client's spill file keeps its name until a client starts again (TestBatchSpillStaleRemoved)")
	}
	// The child's t.TempDir (its state directory) is made under tmp, which
	// this test removes: the child cannot clean up after itself.
	tmp := t.TempDir()
	out := filepath.Join(tmp, "spill-name")
	cmd := exec.Command(os.Args[0], "-test.run=^TestBatchSpillCrash$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+out, "TMPDIR="+tmp, "TMP="+tmp, "TEMP="+tmp)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Success() {
		t.Fatalf("the child was not killed: %v\n%s", err, stderr.Bytes())
	}
	raw, rerr := os.ReadFile(out)
	if rerr != nil || len(raw) == 0 {
		t.Fatalf("the child died (%v) before its batch was admitted (%v):\n%s", err, rerr, stderr.Bytes())
	}
	name := string(raw)
	dir := filepath.Dir(name)
	t.Logf("the child (%v) spilled to %s", err, name)
	left, gerr := filepath.Glob(filepath.Join(dir, "tally-batch-*.spill"))
	if gerr != nil {
		t.Fatal(gerr)
	}
	if _, serr := os.Stat(name); !os.IsNotExist(serr) || len(left) != 0 {
		t.Fatalf("a killed client left spill files %q in its state directory %s (its own: %v)", left, dir, serr)
	}
}

// TestBatchSpillStaleRemoved: spill files an older client left in the state
// directory (beside the key file) when it died are removed when a client
// starts, each logged at INFO with its path; nothing else there is touched.
func TestBatchSpillStaleRemoved(t *testing.T) {
	dir := t.TempDir()
	stale := []string{filepath.Join(dir, "tally-batch-123456.spill"), filepath.Join(dir, "tally-batch-9.spill")}
	kept := []string{filepath.Join(dir, "tally-batch-1.spill.keep"), filepath.Join(dir, "other.spill"), filepath.Join(dir, "notes.txt")}
	for _, p := range append(append([]string(nil), stale...), kept...) {
		if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// A directory of the pattern is not a spill file.
	sub := filepath.Join(dir, "tally-batch-dir.spill")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	kept = append(kept, sub)
	logged := startIn(t, dir)
	for _, p := range stale {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("stale spill file %s not removed (%v)", p, err)
		}
		if !strings.Contains(logged.String(), "level=INFO") || !strings.Contains(logged.String(), p) {
			t.Errorf("the removal of %s is not logged at INFO with its path; the log:\n%s", p, logged.String())
		}
	}
	for _, p := range kept {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s removed: %v", p, err)
		}
	}
	t.Logf("the log:\n%s", logged.String())
}

// startIn makes a client whose key file is in dir, and returns its log
// (every level) of New, where the stale spill sweep runs.
func startIn(t *testing.T, dir string) *bytes.Buffer {
	t.Helper()
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug}))
	_, err := New(Config{Conn: dial(t, listen(t, "").Addr().String(), nil), Data: testData(), KeyFile: filepath.Join(dir, "client.key"),
		PollWait: 50 * time.Millisecond, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	return &logged
}

// TestSweepStaleSpillsSkipsOthers: the sweep removes the stale spill files
// its owner check takes for ours, each logged at INFO with its path, and
// leaves the others (another user's, on a shared temporary directory)
// without a word: before, it tried them too, and warned of each it could
// not remove at every start. The check is injected here: a file of
// another owner cannot be made without root.
func TestSweepStaleSpillsSkipsOthers(t *testing.T) {
	dir := t.TempDir()
	ours := []string{filepath.Join(dir, "tally-batch-1.spill"), filepath.Join(dir, "tally-batch-2.spill")}
	theirs := []string{filepath.Join(dir, "tally-batch-3.spill"), filepath.Join(dir, "tally-batch-4.spill")}
	for _, p := range append(append([]string(nil), ours...), theirs...) {
		if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var asked []string
	owned := func(info fs.FileInfo) bool {
		asked = append(asked, info.Name())
		return info.Name() < "tally-batch-3"
	}
	var logged bytes.Buffer
	sweepStaleSpills(dir, slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug})), owned)
	if len(asked) != len(ours)+len(theirs) {
		t.Errorf("the owner check saw %q, want all %d spill files", asked, len(ours)+len(theirs))
	}
	for _, p := range ours {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("our stale spill file %s not removed (%v)", p, err)
		}
		if !strings.Contains(logged.String(), "level=INFO msg=\"removed a stale batch spill file") || !strings.Contains(logged.String(), "path="+p) {
			t.Errorf("the removal of %s is not logged at INFO with its path", p)
		}
	}
	for _, p := range theirs {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("another user's spill file %s removed: %v", p, err)
		}
		if strings.Contains(logged.String(), p) {
			t.Errorf("another user's spill file %s is logged", p)
		}
	}
	if strings.Contains(logged.String(), "level=WARN") {
		t.Error("the sweep warned")
	}
	t.Logf("the log:\n%s", logged.String())
}
