package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// ErrCorrupt is wrapped by every refusal of an existing file that is
// empty, truncated or damaged. Such a file is never re-initialised: the
// error names the file and what is wrong, and recovering it (from a
// backup, see DB.Backup) is the operator's explicit step.
var ErrCorrupt = errors.New("ledger: state file is damaged")

// The layout of a bbolt file's first two pages, as bbolt 1.x writes them
// (go.etcd.io/bbolt internal/common, little-endian on every platform this
// project builds for): a 16-byte page header (id u64, flags u16, count
// u16, overflow u32), then the meta record: magic u32, version u32, page
// size u32, flags u32, root bucket (root page u64, sequence u64), freelist
// page u64, high-water page u64, txid u64, and an FNV-1a 64 checksum of
// the 56 bytes before it. Reading them here, with ordinary file reads,
// lets Open refuse a short file before bbolt maps it: bbolt maps at least
// 32 KiB whatever the file's size, and touching a mapped page beyond the
// end of the file kills the process (SIGBUS or SIGSEGV, which Go cannot
// recover), which is what a state file truncated to half did.
const (
	boltMagic       = 0xED0CDAED
	boltVersion     = 2
	boltHeaderSize  = 16
	boltMetaSumSize = 56
	boltMetaFlag    = 0x04
	// boltMinPage bounds the page sizes accepted from a meta page; bbolt
	// uses the OS page size (4 KiB here) unless told otherwise.
	boltMinPage = 512
	boltMaxPage = 1 << 16
)

// metaPage is what Open needs from one of the two meta pages.
type metaPage struct {
	pageSize uint32
	pgid     uint64 // high-water mark: pages [0, pgid) are in use or free
	txid     uint64
	freelist uint64
	err      error // why the page is not valid, nil if it is
}

func readMeta(b []byte) metaPage {
	le := binary.LittleEndian
	m := metaPage{
		pageSize: le.Uint32(b[boltHeaderSize+8:]),
		freelist: le.Uint64(b[boltHeaderSize+32:]),
		pgid:     le.Uint64(b[boltHeaderSize+40:]),
		txid:     le.Uint64(b[boltHeaderSize+48:]),
	}
	h := fnv.New64a()
	h.Write(b[boltHeaderSize : boltHeaderSize+boltMetaSumSize])
	switch {
	case le.Uint16(b[8:])&boltMetaFlag == 0:
		m.err = errors.New("not a meta page")
	case le.Uint32(b[boltHeaderSize:]) != boltMagic:
		m.err = errors.New("no bbolt magic number (not a bbolt file, or overwritten)")
	case le.Uint32(b[boltHeaderSize+4:]) != boltVersion:
		m.err = fmt.Errorf("bbolt version %d, want %d", le.Uint32(b[boltHeaderSize+4:]), boltVersion)
	case le.Uint64(b[boltHeaderSize+boltMetaSumSize:]) != h.Sum64():
		m.err = errors.New("checksum mismatch")
	case m.pageSize < boltMinPage || m.pageSize > boltMaxPage || m.pageSize&(m.pageSize-1) != 0:
		m.err = fmt.Errorf("page size %d", m.pageSize)
	}
	return m
}

// FileReport is what CheckFile found in the two meta pages of a file.
type FileReport struct {
	Size     int64
	PageSize int
	// Pages is the high-water mark of the meta page in use: the file must
	// hold at least Pages × PageSize bytes.
	Pages uint64
	// Txid is the last committed transaction.
	Txid uint64
	// MetaProblems names a meta page that is invalid while the other one
	// is valid. bbolt then opens the file at the valid page's transaction:
	// after a torn write of the meta page (power loss mid-commit) that is
	// the last commit, as intended; after a bit flip in the newer page it
	// silently drops the last commit. Open accepts it, Check reports it.
	MetaProblems []string
}

// CheckFile validates the header of the bbolt file at path without
// mapping it: it must not be empty, both meta pages must be readable, one
// at least must be valid, and the file must be long enough for every page
// that meta page says is in use. Errors wrap ErrCorrupt and name the file;
// a missing file gives an error satisfying errors.Is(err, fs.ErrNotExist).
func CheckFile(path string) (FileReport, error) {
	f, err := os.Open(path)
	if err != nil {
		return FileReport{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return FileReport{}, err
	}
	rep := FileReport{Size: st.Size()}
	bad := func(format string, args ...any) (FileReport, error) {
		return rep, fmt.Errorf("%w: %s (%d bytes) %s", ErrCorrupt, path, rep.Size, fmt.Sprintf(format, args...))
	}
	if rep.Size == 0 {
		return bad("is empty (an existing state file is never re-initialised)")
	}
	head := make([]byte, 4096)
	n, err := f.ReadAt(head, 0)
	if err != nil && err != io.EOF {
		return rep, fmt.Errorf("ledger: read %s: %w", path, err)
	}
	if n < boltHeaderSize+boltMetaSumSize+8 {
		return bad("is too short for a bbolt header")
	}
	m0 := readMeta(head[:n])
	ps := m0.pageSize
	if m0.err != nil {
		// Meta page 0 is unreadable: bbolt then assumes the OS page size
		// to find page 1, and so do we.
		ps = uint32(os.Getpagesize())
	}
	if int64(ps)*2 > rep.Size {
		return bad("is truncated: it holds less than its two meta pages of %d bytes", ps)
	}
	page1 := make([]byte, boltHeaderSize+boltMetaSumSize+8)
	if _, err := f.ReadAt(page1, int64(ps)); err != nil {
		return rep, fmt.Errorf("ledger: read %s: %w", path, err)
	}
	m1 := readMeta(page1)
	var use metaPage
	switch {
	case m0.err != nil && m1.err != nil:
		return bad("has no valid meta page: page 0: %v; page 1: %v", m0.err, m1.err)
	case m0.err != nil:
		use = m1
		rep.MetaProblems = append(rep.MetaProblems, fmt.Sprintf("meta page 0: %v (meta page 1, txid %d, is used)", m0.err, m1.txid))
	case m1.err != nil:
		use = m0
		rep.MetaProblems = append(rep.MetaProblems, fmt.Sprintf("meta page 1: %v (meta page 0, txid %d, is used)", m1.err, m0.txid))
	case m1.txid > m0.txid:
		use = m1
	default:
		use = m0
	}
	rep.PageSize, rep.Pages, rep.Txid = int(use.pageSize), use.pgid, use.txid
	if use.pgid < 2 || use.pgid > uint64(rep.Size)/uint64(use.pageSize) {
		return bad("is truncated: its meta page (txid %d) counts %d pages of %d bytes, %d bytes, and the file has only %d",
			use.txid, use.pgid, use.pageSize, use.pgid*uint64(use.pageSize), rep.Size)
	}
	if use.freelist != ^uint64(0) && (use.freelist < 2 || use.freelist >= use.pgid) {
		return bad("is damaged: its meta page (txid %d) puts the freelist at page %d, outside pages [2, %d)", use.txid, use.freelist, use.pgid)
	}
	return rep, nil
}

// guard runs fn, turning a memory fault inside it (bbolt reading a page
// that a damaged pointer sends outside the mapped file) into an error that
// wraps ErrCorrupt, and a panic of bbolt into the same. CheckFile already
// refuses the files whose header does not fit their size; this is the last
// resort for a damaged page inside the file. The goroutine is left in a
// consistent state: bbolt's read path only reads the mapping, and its
// deferred unlocks run while the panic unwinds.
func guard(path string, fn func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s: reading it failed: %v", ErrCorrupt, path, r)
		}
	}()
	return fn()
}

// maxCheckErrors bounds the problems of one consistency check that an
// error lists; the first ones locate the damage.
const maxCheckErrors = 5

// check runs bbolt's consistency check (Tx.Check: every page reachable
// once, every page below the high-water mark reachable or free, keys in
// order) after touching every key and value from this goroutine under
// guard, so that a damaged page faults here, where it is recovered, and
// not in Check's own goroutine, where it would kill the process.
func (db *DB) check() error {
	err := guard(db.path, func() error {
		return db.bolt.View(func(tx *bolt.Tx) error {
			var sink byte
			return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
				return touch(b, &sink)
			})
		})
	})
	if err != nil {
		return err
	}
	var problems []string
	n := 0
	err = db.bolt.View(func(tx *bolt.Tx) error {
		for e := range tx.Check() {
			n++
			if len(problems) < maxCheckErrors {
				problems = append(problems, e.Error())
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ledger: check %s: %w", db.path, err)
	}
	if n > 0 {
		more := ""
		if n > len(problems) {
			more = fmt.Sprintf("; and %d more", n-len(problems))
		}
		return fmt.Errorf("%w: %s fails bbolt's consistency check (%d problems): %s%s", ErrCorrupt, db.path, n, strings.Join(problems, "; "), more)
	}
	return nil
}

// touch reads every key and the first and last byte of every value of b
// and its nested buckets.
func touch(b *bolt.Bucket, sink *byte) error {
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		*sink ^= k[len(k)-1]
		if v == nil {
			if nb := b.Bucket(k); nb != nil {
				if err := touch(nb, sink); err != nil {
					return err
				}
			}
			continue
		}
		if len(v) > 0 {
			*sink ^= v[0] ^ v[len(v)-1]
		}
	}
	return nil
}

// Check runs every structural check on the open file: its header
// (CheckFile, including a meta page that is invalid while the other one
// is used), bbolt's consistency check and, in a sealed file, every caller
// record's checksum (Tx.PutRaw). It does not check the receipts: Verify
// does. Errors wrap ErrCorrupt.
func (db *DB) Check() error {
	rep, err := CheckFile(db.path)
	if err != nil {
		return err
	}
	if len(rep.MetaProblems) > 0 {
		return fmt.Errorf("%w: %s: %s", ErrCorrupt, db.path, strings.Join(rep.MetaProblems, "; "))
	}
	if err := db.check(); err != nil {
		return err
	}
	return db.View(func(tx *Tx) error {
		return tx.tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			if checkBucket(string(name)) != nil {
				return nil // the ledger's own buckets: receipts are hash-chained and signed
			}
			return tx.ForEach(string(name), func(string, []byte) error { return nil })
		})
	})
}

// createFile makes a new, initialised ledger at path atomically: it is
// built under a temporary name in the same directory and linked into
// place only when complete, so a file at path is always a whole ledger
// and one that is empty or short is damage, never a start that was
// interrupted. If another process created path meanwhile, that file is
// kept and opened as it is.
func createFile(path string, opts Options) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".new-*")
	if err != nil {
		return fmt.Errorf("ledger: create %s: %w", path, err)
	}
	name := tmp.Name()
	tmp.Close()
	defer os.Remove(name)
	b, err := bolt.Open(name, 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	if err != nil {
		return fmt.Errorf("ledger: create %s: %w", path, err)
	}
	db := &DB{bolt: b, path: path}
	err = db.init()
	if cerr := b.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Link(name, path); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("ledger: create %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Backup writes a consistent copy of the database to path, from one read
// transaction (bbolt's Tx.WriteTo), so it may run while other goroutines
// of this process write. The copy is written under a temporary name in
// path's directory, synced, and renamed into place, so path holds either
// the previous copy or the new one; its mode is 0600, like the original,
// since it holds the signing key. It returns the copy's size.
//
// Another process cannot take a copy while a coordinator runs: the
// coordinator holds the file's exclusive lock, which a read-only Open
// waits for. A running coordinator writes its own copy (--backup).
func (db *DB) Backup(path string) (int64, error) {
	if abs, err := filepath.Abs(path); err == nil {
		if own, err := filepath.Abs(db.path); err == nil && abs == own {
			return 0, fmt.Errorf("ledger: backup of %s onto itself", db.path)
		}
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".new-*")
	if err != nil {
		return 0, fmt.Errorf("ledger: backup %s: %w", db.path, err)
	}
	defer os.Remove(tmp.Name())
	var n int64
	err = db.bolt.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(tmp)
		return err
	})
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return 0, fmt.Errorf("ledger: backup %s to %s: %w", db.path, path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return n, nil
}
