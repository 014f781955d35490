package client

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// ErrBatchSpillCorrupt: an influence ciphertext this member verified and
// wrote to its batch's spill file read back as other bytes (a disk, or
// something else on this machine, changed it). Not the coordinator's
// doing: no share of the batch is made, and the task is not refused; the
// next poll fetches and verifies it again.
var ErrBatchSpillCorrupt = errors.New("client: a batch's spilled ciphertext changed after it was verified")

// ErrBatchSpill: this member could not keep a batch's verified ciphertexts
// on disk (no room, a write error). Its own failure, not the
// coordinator's: no share is made and the task is not refused.
var ErrBatchSpill = errors.New("client: cannot spill a batch's ciphertexts")

// batchSpill keeps the verified influence ciphertexts of one batched
// decryption task on disk between their verification and their shares,
// each where it was written and with the SHA-256 of the bytes verified.
// The file is in the client's state directory (beside its key file) or
// else the system's temporary directory, and is removed when the task
// ends, whatever its outcome.
type batchSpill struct {
	task string
	f    *os.File
	size int64
	at   []spillEntry // by request index
}

type spillEntry struct {
	off, n int64
	digest [32]byte
	put    bool
}

func (c *Client) newBatchSpill(task string, n int) (*batchSpill, error) {
	dir := ""
	if c.cfg.KeyFile != "" {
		dir = filepath.Dir(c.cfg.KeyFile)
	}
	f, err := os.CreateTemp(dir, "tally-batch-*.spill")
	if err != nil {
		return nil, fmt.Errorf("%w: decryption task %s: %w", ErrBatchSpill, task, err)
	}
	if h := c.batchTest; h != nil && h.spill != nil {
		h.spill(f)
	}
	return &batchSpill{task: task, f: f, at: make([]spillEntry, n)}, nil
}

// put writes request i's verified ciphertext at the end of the file.
func (s *batchSpill) put(i int, ct []byte) error {
	if _, err := s.f.WriteAt(ct, s.size); err != nil {
		return fmt.Errorf("%w: decryption task %s, request %d: %w", ErrBatchSpill, s.task, i, err)
	}
	s.at[i] = spillEntry{off: s.size, n: int64(len(ct)), digest: sha256.Sum256(ct), put: true}
	s.size += int64(len(ct))
	return nil
}

// check reads every ciphertext back, a piece at a time, and compares it
// with the digest of what was verified.
func (s *batchSpill) check() error {
	for i, e := range s.at {
		if !e.put {
			return fmt.Errorf("%w: decryption task %s, request %d was not spilled", ErrBatchSpill, s.task, i)
		}
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(s.f, e.off, e.n)); err != nil {
			return fmt.Errorf("%w: decryption task %s, request %d: %w", ErrBatchSpill, s.task, i, err)
		}
		if d := [32]byte(h.Sum(nil)); d != e.digest {
			return fmt.Errorf("%w: decryption task %s, request %d reads back hashing to %x, verified %x", ErrBatchSpillCorrupt, s.task, i, d[:8], e.digest[:8])
		}
	}
	return nil
}

// get reads request i's ciphertext back into buf (grown if short) and
// checks it again: the share is made from these bytes.
func (s *batchSpill) get(i int, buf []byte) ([]byte, error) {
	e := s.at[i]
	if !e.put {
		return buf, fmt.Errorf("%w: decryption task %s, request %d was not spilled", ErrBatchSpill, s.task, i)
	}
	if int64(cap(buf)) < e.n {
		buf = make([]byte, e.n)
	}
	buf = buf[:e.n]
	if _, err := s.f.ReadAt(buf, e.off); err != nil {
		return buf, fmt.Errorf("%w: decryption task %s, request %d: %w", ErrBatchSpill, s.task, i, err)
	}
	if d := sha256.Sum256(buf); d != e.digest {
		return buf, fmt.Errorf("%w: decryption task %s, request %d reads back hashing to %x, verified %x", ErrBatchSpillCorrupt, s.task, i, d[:8], e.digest[:8])
	}
	return buf, nil
}

// remove closes and deletes the file.
func (s *batchSpill) remove() {
	s.f.Close()
	os.Remove(s.f.Name())
}
