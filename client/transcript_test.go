package client

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tallyfl/tally/aggregation"
)

// A member's transcript is persisted beside its key file before any share
// leaves, read back by a restarted client, and a damaged file is refused
// with its path, never replaced by a fresh transcript.
func TestTranscriptFilePersistsAndRefusesDamage(t *testing.T) {
	h := newFakeHE(t, "job")
	m := h.members["m0"]
	req := aggregation.DecryptRequest{Key: h.inst.ID(), Purpose: "round", Round: 2, Attempt: 1,
		Digests: [][32]byte{{7}}, Contributors: []string{"a", "b"}, Participants: []string{"m0", "m1"}}
	if _, err := m.Admit(req, nil); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "client.key")
	c := &Client{cfg: Config{KeyFile: keyFile}, member: m}
	if err := c.saveTranscript(); err != nil {
		t.Fatal(err)
	}
	path := keyFile + ".transcript"
	tr, err := loadTranscript(path)
	if err != nil {
		t.Fatal(err)
	}
	n, head := m.TranscriptHead("job")
	if tr == nil || tr.Len() != n || tr.Head() != head {
		t.Fatalf("transcript read back: %v; want %d entries, head %x", tr, n, head[:8])
	}
	if _, ok := tr.FindRequest(req.ID()); !ok {
		t.Fatal("the admitted request is not in the persisted transcript")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".tally-transcript-*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}

	// A restarted client process with the same key file resumes it.
	conn := dial(t, listen(t, "").Addr().String(), nil)
	restarted, err := New(Config{Conn: conn, Data: testData(), KeyFile: keyFile, PollWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if restarted.transcript == nil || restarted.transcript.Head() != head {
		t.Fatal("a client restarted with the same key file did not resume its transcript")
	}

	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)/2] ^= 1
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = New(Config{Conn: conn, Data: testData(), KeyFile: keyFile, PollWait: 50 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("a damaged transcript file: err = %v, want one naming %s", err, path)
	}
	if after, _ := os.ReadFile(path); string(after) != string(raw) {
		t.Fatal("the damaged transcript file was replaced")
	}
}
