package client

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tallyfl/tally/aggregation"
)

// The decryption transcript a committee member keeps (aggregation's
// Transcript: every decryption of the job it took part in or was shown,
// hash-chained and signed by the participants). It lives beside the key
// file, as KeyFile + ".transcript", so that a client restarted with the
// same key file resumes it: the rules members apply before decrypting hold
// across restarts, not only within one process. Without a key file the
// transcript is kept in memory, as the key is.

// transcriptPath is where this client's transcript is persisted; "" when
// it has no key file.
func (c *Client) transcriptPath() string {
	if c.cfg.KeyFile == "" {
		return ""
	}
	return c.cfg.KeyFile + ".transcript"
}

// loadTranscript reads the transcript at path; nil when there is none yet.
// A file that does not decode is an error naming it, never a fresh start:
// a member that forgot what it decrypted could be asked again.
func loadTranscript(path string) (*aggregation.Transcript, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("client: transcript file %s: %w", path, err)
	}
	t, err := aggregation.UnmarshalTranscript(b)
	if err != nil {
		return nil, fmt.Errorf("client: transcript file %s is damaged; it is not replaced (move it away only if this client never decrypted for the job): %w", path, err)
	}
	return t, nil
}

// saveTranscript writes the member's transcript atomically: a temporary
// file, synced, renamed over the old one, and the directory synced, so
// that a crash leaves the old transcript or the new one.
func (c *Client) saveTranscript() error {
	path := c.transcriptPath()
	if path == "" || c.member == nil {
		return nil
	}
	b, err := c.member.MarshalTranscript()
	if err != nil || b == nil {
		return err
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".tally-transcript-*")
	if err != nil {
		return fmt.Errorf("client: transcript file %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("client: transcript file %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("client: transcript file %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("client: transcript file %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("client: transcript file %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		// Best effort: not every file system syncs directories.
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// transcriptEntries decodes the entries a decryption task carries.
func transcriptEntries(taskID string, raw [][]byte) ([]aggregation.TranscriptEntry, error) {
	out := make([]aggregation.TranscriptEntry, len(raw))
	for i, b := range raw {
		if err := out[i].UnmarshalBinary(b); err != nil {
			return nil, fmt.Errorf("client: decryption task %s: transcript entry %d: %w", taskID, i, err)
		}
	}
	return out, nil
}
