//go:build unix

package client

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// nobody is the uid the test gives the other user's spill file.
const nobody = 65534

// TestBatchSpillStaleOfAnotherUserLeft: on a shared directory (the system's
// temporary one, for clients without a key file) the sweep at start
// removes only this user's stale spill files. Another user's is neither
// removed nor logged: before, a client run by another user warned at
// every start that it could not remove it, and one run as root removed
// it. Making a file of another owner needs root (chown); without it the
// owner check is tested by injection (TestSweepStaleSpillsSkipsOthers).
func TestBatchSpillStaleOfAnotherUserLeft(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("making another user's file needs root; TestSweepStaleSpillsSkipsOthers covers the check")
	}
	dir := t.TempDir()
	ours := filepath.Join(dir, "tally-batch-1.spill")
	theirs := filepath.Join(dir, "tally-batch-2.spill")
	for _, p := range []string{ours, theirs} {
		if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(theirs, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	logged := startIn(t, dir)
	if _, err := os.Stat(theirs); err != nil {
		t.Errorf("another user's spill file was removed: %v", err)
	}
	if strings.Contains(logged.String(), theirs) {
		t.Errorf("another user's spill file is logged; the log:\n%s", logged.String())
	}
	if _, err := os.Stat(ours); !os.IsNotExist(err) {
		t.Errorf("our stale spill file %s not removed (%v)", ours, err)
	}
	if !strings.Contains(logged.String(), "level=INFO") || !strings.Contains(logged.String(), ours) {
		t.Errorf("the removal of %s is not logged at INFO with its path; the log:\n%s", ours, logged.String())
	}
}

// fileInfoWith is info with its Sys replaced.
type fileInfoWith struct {
	os.FileInfo
	sys any
}

func (f fileInfoWith) Sys() any { return f.sys }

// TestOwnedByUs: ownedByUs takes a file this process made for ours, and
// not one whose owner is another uid, nor one whose owner it cannot read.
func TestOwnedByUs(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tally-batch-1.spill")
	if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	info, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	if !ownedByUs(info) {
		t.Errorf("a file this process made (%+v) is not taken for ours (uid %d)", info.Sys(), os.Getuid())
	}
	st := *info.Sys().(*syscall.Stat_t)
	st.Uid = uint32(os.Getuid()) + 1
	if ownedByUs(fileInfoWith{info, &st}) {
		t.Errorf("a file of uid %d is taken for ours (uid %d)", st.Uid, os.Getuid())
	}
	if ownedByUs(fileInfoWith{info, nil}) {
		t.Error("a file without an owner is taken for ours")
	}
}
