package client

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
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
// The file is made in the client's state directory (beside its key file)
// or else the system's temporary directory, and removed from it as soon
// as it is made: the task holds it open, and the kernel frees it when the
// task closes it or when the process dies (kill -9, a power loss), so a
// client that crashes mid-batch leaves nothing behind. Where the system
// does not let an open file be removed (Windows), the file keeps its name
// until the task ends, whatever its outcome, and one a crash left there
// is removed when a client next starts (removeStaleSpills).
type batchSpill struct {
	task string
	f    *os.File
	// named: the file could not be removed when made; remove does it.
	named bool
	size  int64
	at    []spillEntry // by request index
}

type spillEntry struct {
	off, n int64
	digest [32]byte
	put    bool
}

// spillPattern is the name of a batch's spill file (os.CreateTemp).
const spillPattern = "tally-batch-*.spill"

// spillDir is the directory batch spill files are made in: the key file's,
// or "" (the system's temporary directory) without one.
func (c *Client) spillDir() string {
	if c.cfg.KeyFile != "" {
		return filepath.Dir(c.cfg.KeyFile)
	}
	return ""
}

func (c *Client) newBatchSpill(task string, n int) (*batchSpill, error) {
	f, err := os.CreateTemp(c.spillDir(), spillPattern)
	if err != nil {
		return nil, fmt.Errorf("%w: decryption task %s: %w", ErrBatchSpill, task, err)
	}
	s := &batchSpill{task: task, f: f, at: make([]spillEntry, n)}
	if err := os.Remove(f.Name()); err != nil {
		// Not removable while open here: removed on close instead.
		s.named = true
		c.log.Debug("the batch's spill file cannot be removed while open; it is removed when the task ends", "task", task, "path", f.Name(), "err", err)
	}
	if h := c.batchTest; h != nil && h.spill != nil {
		h.spill(f)
	}
	return s, nil
}

// removeStaleSpills removes the batch spill files left in the spill
// directory by a client that died mid-batch: an older version, which kept
// the file's name until the task ended, or one on a system where an open
// file cannot be removed. Each is logged at INFO with its path. Removing
// the spill file of another client that is still running on this machine
// (they share the system's temporary directory when they have no key
// file) takes nothing from it: it reads and writes the file it holds
// open, and the system either frees the file when that one closes it
// (POSIX) or refuses to remove a file open elsewhere (Windows). Only this
// user's files are considered (ownedByUs): on a shared temporary
// directory the other users' are theirs, which a client may not remove
// (it warned of each at every start) or, run as root, must not.
func (c *Client) removeStaleSpills() {
	dir := c.spillDir()
	if dir == "" {
		dir = os.TempDir()
	}
	sweepStaleSpills(dir, c.log, ownedByUs)
}

// sweepStaleSpills is removeStaleSpills in dir, for the files ours
// accepts; the others are skipped without a word.
func sweepStaleSpills(dir string, log *slog.Logger, ours func(fs.FileInfo) bool) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			log.Warn("cannot look for stale batch spill files", "dir", dir, "err", err)
		}
		return
	}
	for _, e := range ents {
		if ok, _ := filepath.Match(spillPattern, e.Name()); !ok || !e.Type().IsRegular() {
			continue
		}
		if info, err := e.Info(); err != nil || !ours(info) {
			continue // gone since, or another user's
		}
		path := filepath.Join(dir, e.Name())
		if err := os.Remove(path); err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				log.Warn("cannot remove a stale batch spill file", "path", path, "err", err)
			}
			continue
		}
		log.Info("removed a stale batch spill file, left by a client that died mid-batch", "path", path)
	}
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

// remove closes the file, which frees it, and removes its name if it
// still has one.
func (s *batchSpill) remove() {
	s.f.Close()
	if s.named {
		os.Remove(s.f.Name())
	}
}
