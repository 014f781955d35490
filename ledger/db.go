package ledger

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Sentinel errors of the storage layer. Each is wrapped with %w and context.
var (
	// ErrLocked means another process (or another DB in this process) holds
	// the file's lock and did not release it within Options.LockTimeout.
	ErrLocked = errors.New("ledger: database file is locked by another process")
	// ErrFormat means the file is a bbolt file that this package did not
	// create, or one written by an incompatible version.
	ErrFormat = errors.New("ledger: not a tally ledger database")
	// ErrReservedBucket means a caller named a bucket in the ledger's own
	// namespace (prefix "_ledger/") or gave an empty name.
	ErrReservedBucket = errors.New("ledger: reserved or empty bucket name")
	// ErrReadOnly means a write was attempted on a read-only DB or in a View.
	ErrReadOnly = errors.New("ledger: database or transaction is read-only")
	// ErrNoKey means the database holds no signing key yet and, being
	// read-only, cannot create one.
	ErrNoKey = errors.New("ledger: no signing key in database")
)

// DefaultLockTimeout is how long Open waits for the file lock when
// Options.LockTimeout is zero. bbolt itself waits forever by default, which
// would hang a second coordinator started by mistake on the same file; one
// second is long enough to ride over a previous process that is still
// exiting and short enough for an operator to see the error at once.
const DefaultLockTimeout = time.Second

// Format is stored in the meta bucket at creation and checked at Open.
// Format 2 seals every caller record with a checksum (see Tx.PutRaw);
// files of format 1 ([FormatUnsealed]) are still opened, read and written
// as they were, without checksums.
const Format = "tally-ledger/2"

// FormatUnsealed is the format of files written before records carried a
// checksum.
const FormatUnsealed = "tally-ledger/1"

// Internal bucket names. The "_ledger/" prefix is refused for caller buckets
// so that the coordinator's own state can never collide with, or overwrite,
// the signing key or the receipts.
const (
	reservedPrefix    = "_ledger/"
	bucketMeta        = reservedPrefix + "meta"
	bucketReceipts    = reservedPrefix + "receipts"
	bucketReceiptIdx  = reservedPrefix + "receipt_index"
	metaKeyFormat     = "format"
	metaKeySigningKey = "signing_key_seed"
)

// Options configure Open. The zero value is a writable database with
// DefaultLockTimeout.
type Options struct {
	// LockTimeout bounds the wait for the file lock; zero means
	// DefaultLockTimeout.
	LockTimeout time.Duration
	// ReadOnly opens the file with a shared lock and refuses every write. It
	// is what offline tools (`tally ledger verify`) use; it still conflicts
	// with a running coordinator, which holds the exclusive lock.
	ReadOnly bool
	// Rand is the entropy source for the signing key, crypto/rand when nil.
	// Tests pass a seeded reader; production must leave it nil.
	Rand io.Reader
}

// DB is one coordinator's state file: caller buckets of records, the
// coordinator's signing key and the receipt ledger. It is safe for
// concurrent use; bbolt serialises writers and lets readers run alongside.
type DB struct {
	bolt     *bolt.DB
	path     string
	readOnly bool
	rand     io.Reader
	// sealed is true when the file's format seals records (Format), false
	// for a FormatUnsealed file.
	sealed bool

	keyMu sync.Mutex
	key   ed25519.PrivateKey // cached after the first SigningKey call
}

// Open opens or creates the database at path with file mode 0600 (the file
// holds the signing key, see SigningKey). A second Open of the same file,
// from this or another process, fails with ErrLocked after the lock timeout.
//
// Only a missing file is created (atomically, see createFile). An existing
// file is checked before it is used: a file that is empty, shorter than
// its meta page says, or that fails bbolt's consistency check (Tx.Check)
// is refused with an error wrapping ErrCorrupt that names the file and the
// problem, and is not modified: bbolt would initialise an empty file as a
// new database, and map a truncated one and crash on its first read.
func Open(path string, opts Options) (*DB, error) {
	timeout := opts.LockTimeout
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}
	opts.LockTimeout = timeout
	_, err := CheckFile(path)
	if errors.Is(err, fs.ErrNotExist) && !opts.ReadOnly {
		if err = createFile(path, opts); err == nil {
			_, err = CheckFile(path)
		}
	}
	if err != nil {
		if errors.Is(err, ErrCorrupt) {
			return nil, err
		}
		return nil, fmt.Errorf("ledger: open %s: %w", path, err)
	}
	var b *bolt.DB
	err = guard(path, func() error {
		var err error
		b, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, ReadOnly: opts.ReadOnly})
		return err
	})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("%w: %s (waited %v)", ErrLocked, path, timeout)
		}
		if errors.Is(err, ErrCorrupt) {
			return nil, err
		}
		return nil, fmt.Errorf("ledger: open %s: %w", path, err)
	}
	db := &DB{bolt: b, path: path, readOnly: opts.ReadOnly, rand: opts.Rand}
	// The header was checked before bbolt took the lock; check it again
	// under the lock (a writer may have been committing), then the pages.
	if _, err := CheckFile(path); err != nil {
		_ = b.Close()
		return nil, err
	}
	if err := db.check(); err != nil {
		_ = b.Close()
		return nil, err
	}
	if err := guard(path, db.init); err != nil {
		_ = b.Close()
		return nil, err
	}
	return db, nil
}

// init creates the internal buckets of a new file, or checks the format of
// an existing one.
func (db *DB) init() error {
	check := func(tx *bolt.Tx) error {
		m := tx.Bucket([]byte(bucketMeta))
		if m == nil {
			return nil
		}
		switch f := m.Get([]byte(metaKeyFormat)); string(f) {
		case Format:
			db.sealed = true
		case FormatUnsealed:
			db.sealed = false
		default:
			return fmt.Errorf("%w: %s has format %q, want %q or %q", ErrFormat, db.path, f, Format, FormatUnsealed)
		}
		return nil
	}
	if db.readOnly {
		return db.bolt.View(func(tx *bolt.Tx) error {
			if tx.Bucket([]byte(bucketMeta)) == nil {
				return fmt.Errorf("%w: %s has no ledger metadata", ErrFormat, db.path)
			}
			return check(tx)
		})
	}
	// A complete ledger is only read: a commit, even an empty one, writes
	// a meta page, and a file that is then refused (another job's, say)
	// must be left exactly as it was.
	complete := false
	if err := db.bolt.View(func(tx *bolt.Tx) error {
		complete = tx.Bucket([]byte(bucketMeta)) != nil && tx.Bucket([]byte(bucketReceipts)) != nil && tx.Bucket([]byte(bucketReceiptIdx)) != nil
		if complete {
			return check(tx)
		}
		return nil
	}); err != nil || complete {
		return err
	}
	return db.bolt.Update(func(tx *bolt.Tx) error {
		if tx.Bucket([]byte(bucketMeta)) == nil {
			// A file that already holds buckets but no metadata belongs to
			// someone else; refuse rather than mix our state into it.
			var foreign bool
			_ = tx.ForEach(func([]byte, *bolt.Bucket) error { foreign = true; return nil })
			if foreign {
				return fmt.Errorf("%w: %s holds buckets but no ledger metadata", ErrFormat, db.path)
			}
			m, err := tx.CreateBucket([]byte(bucketMeta))
			if err != nil {
				return err
			}
			if err := m.Put([]byte(metaKeyFormat), []byte(Format)); err != nil {
				return err
			}
		}
		if err := check(tx); err != nil {
			return err
		}
		for _, name := range []string{bucketReceipts, bucketReceiptIdx} {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return err
			}
		}
		return nil
	})
}

// Close releases the file lock. Transactions in flight must have returned.
func (db *DB) Close() error { return db.bolt.Close() }

// Path returns the file the DB was opened from.
func (db *DB) Path() string { return db.path }

// Update runs fn in one read-write bbolt transaction. If fn returns an
// error (or panics) nothing it wrote is kept and the error is returned as
// is; otherwise the transaction commits. bbolt writes the changed pages,
// fdatasyncs, then writes and fdatasyncs the meta page that makes them
// visible, so after a kill or power loss at any point the file shows either
// everything fn wrote or nothing of it. Update returns only once that
// commit is on disk (as far as the disk honours fsync).
//
// Only one Update runs at a time. fn must not call Update, View or
// SigningKey on the same DB (that would deadlock on bbolt's writer lock);
// fetch the signing key before the transaction.
func (db *DB) Update(fn func(*Tx) error) error {
	if db.readOnly {
		return fmt.Errorf("%w: %s", ErrReadOnly, db.path)
	}
	return db.bolt.Update(func(btx *bolt.Tx) error { return fn(db.tx(btx)) })
}

// View runs fn in a read-only transaction over a consistent snapshot. Byte
// slices handed to fn's callbacks are valid only until View returns.
func (db *DB) View(fn func(*Tx) error) error {
	return db.bolt.View(func(btx *bolt.Tx) error { return fn(db.tx(btx)) })
}

func (db *DB) tx(btx *bolt.Tx) *Tx { return &Tx{tx: btx, sealed: db.sealed, path: db.path} }

// Tx is one transaction, valid only inside the function given to Update or
// View. It is not safe for concurrent use.
type Tx struct {
	tx     *bolt.Tx
	sealed bool
	path   string
}

// sealSize is the length of a record's seal: a CRC-32C (Castagnoli) of the
// bucket name, the key and the value, appended to the value. It catches a
// bit flipped or a record moved to another key, which bbolt's page checks
// do not (they cover the tree's structure, not its data); CRC-32C runs at
// several GB/s, so sealing a model's parameters or a ciphertext costs
// little beside writing it. It is not a signature: receipts are signed and
// hash-chained for that.
const sealSize = 4

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func seal(bucket, key string, value []byte) uint32 {
	h := crc32.New(castagnoli)
	h.Write([]byte(bucket))
	h.Write([]byte{0})
	h.Write([]byte(key))
	h.Write([]byte{0})
	h.Write(value)
	return h.Sum32()
}

// open returns a stored value without its seal, or an error wrapping
// ErrCorrupt that names the file and the record when the seal does not
// match.
func (t *Tx) open(bucket, key string, stored []byte) ([]byte, error) {
	if !t.sealed {
		return stored, nil
	}
	if len(stored) < sealSize {
		return nil, fmt.Errorf("%w: %s: record %s/%s is %d bytes, shorter than its %d-byte checksum; restore the file from a backup (tally ledger backup)", ErrCorrupt, t.path, bucket, key, len(stored), sealSize)
	}
	v := stored[:len(stored)-sealSize]
	if got, want := binary.BigEndian.Uint32(stored[len(v):]), seal(bucket, key, v); got != want {
		return nil, fmt.Errorf("%w: %s: record %s/%s fails its checksum (stored %08x, computed %08x): it was damaged on disk; restore the file from a backup (tally ledger backup)", ErrCorrupt, t.path, bucket, key, got, want)
	}
	return v, nil
}

func checkBucket(name string) error {
	if name == "" || strings.HasPrefix(name, reservedPrefix) {
		return fmt.Errorf("%w: %q", ErrReservedBucket, name)
	}
	return nil
}

func (t *Tx) writable() error {
	if !t.tx.Writable() {
		return ErrReadOnly
	}
	return nil
}

// Put stores v, encoded as JSON, under key in bucket, creating the bucket
// if needed.
func (t *Tx) Put(bucket, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("ledger: encode %s/%s: %w", bucket, key, err)
	}
	return t.PutRaw(bucket, key, b)
}

// PutRaw stores value as given (bbolt copies it) under key in bucket,
// creating the bucket if needed. Use it for large binary records such as a
// model's parameters. In a sealed file (Format) the stored record carries a
// checksum that every read checks: a damaged record is refused with
// ErrCorrupt, never returned.
func (t *Tx) PutRaw(bucket, key string, value []byte) error {
	if err := checkBucket(bucket); err != nil {
		return err
	}
	if err := t.writable(); err != nil {
		return err
	}
	if key == "" {
		return fmt.Errorf("ledger: empty key in bucket %q", bucket)
	}
	b, err := t.tx.CreateBucketIfNotExists([]byte(bucket))
	if err != nil {
		return fmt.Errorf("ledger: bucket %q: %w", bucket, err)
	}
	if t.sealed {
		sealed := make([]byte, len(value)+sealSize)
		copy(sealed, value)
		binary.BigEndian.PutUint32(sealed[len(value):], seal(bucket, key, value))
		value = sealed
	}
	if err := b.Put([]byte(key), value); err != nil {
		return fmt.Errorf("ledger: put %s/%s: %w", bucket, key, err)
	}
	return nil
}

// Get decodes the JSON record under key into out. It reports false, and
// leaves out untouched, when the bucket or the key does not exist.
func (t *Tx) Get(bucket, key string, out any) (bool, error) {
	v, ok, err := t.getRaw(bucket, key)
	if err != nil || !ok {
		return false, err
	}
	if err := json.Unmarshal(v, out); err != nil {
		return true, fmt.Errorf("ledger: decode %s/%s: %w", bucket, key, err)
	}
	return true, nil
}

// GetRaw returns a copy of the value under key, or false when the bucket or
// the key does not exist.
func (t *Tx) GetRaw(bucket, key string) ([]byte, bool, error) {
	v, ok, err := t.getRaw(bucket, key)
	if err != nil || !ok {
		return nil, false, err
	}
	return bytes.Clone(v), true, nil
}

func (t *Tx) getRaw(bucket, key string) ([]byte, bool, error) {
	if err := checkBucket(bucket); err != nil {
		return nil, false, err
	}
	b := t.tx.Bucket([]byte(bucket))
	if b == nil {
		return nil, false, nil
	}
	v := b.Get([]byte(key))
	if v == nil {
		return nil, false, nil
	}
	v, err := t.open(bucket, key, v)
	if err != nil {
		return nil, true, err
	}
	return v, true, nil
}

// Delete removes key from bucket; a missing key or bucket is not an error.
func (t *Tx) Delete(bucket, key string) error {
	if err := checkBucket(bucket); err != nil {
		return err
	}
	if err := t.writable(); err != nil {
		return err
	}
	b := t.tx.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	return b.Delete([]byte(key))
}

// DeleteBucket removes a bucket and all its records; a missing bucket is
// not an error.
func (t *Tx) DeleteBucket(bucket string) error {
	if err := checkBucket(bucket); err != nil {
		return err
	}
	if err := t.writable(); err != nil {
		return err
	}
	err := t.tx.DeleteBucket([]byte(bucket))
	if errors.Is(err, bolt.ErrBucketNotFound) {
		return nil
	}
	return err
}

// ForEach calls fn for every record of bucket in ascending byte order of
// the keys (use RoundKey for numeric order), stopping at the first error,
// which it returns. value is valid only during the call: copy it to keep
// it. fn must not write to the same bucket. A missing bucket has no records.
func (t *Tx) ForEach(bucket string, fn func(key string, value []byte) error) error {
	return t.ForEachPrefix(bucket, "", fn)
}

// ForEachPrefix is ForEach restricted to the keys that start with prefix.
func (t *Tx) ForEachPrefix(bucket, prefix string, fn func(key string, value []byte) error) error {
	if err := checkBucket(bucket); err != nil {
		return err
	}
	b := t.tx.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	p := []byte(prefix)
	c := b.Cursor()
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		if v == nil {
			continue // a nested bucket; this package never creates one
		}
		v, err := t.open(bucket, string(k), v)
		if err != nil {
			return err
		}
		if err := fn(string(k), v); err != nil {
			return err
		}
	}
	return nil
}

// Last returns the greatest key of bucket and a copy of its value, or
// false when the bucket is empty or missing. With RoundKey keys it is the
// latest round.
func (t *Tx) Last(bucket string) (key string, value []byte, ok bool, err error) {
	if err := checkBucket(bucket); err != nil {
		return "", nil, false, err
	}
	b := t.tx.Bucket([]byte(bucket))
	if b == nil {
		return "", nil, false, nil
	}
	k, v := b.Cursor().Last()
	if k == nil {
		return "", nil, false, nil
	}
	v, err = t.open(bucket, string(k), v)
	if err != nil {
		return "", nil, true, err
	}
	return string(k), bytes.Clone(v), true, nil
}

// roundKeyDigits is wide enough for any round a job can run (ten billion)
// while keeping keys short and readable in a bbolt dump.
const roundKeyDigits = 10

// RoundKey returns r as a zero-padded decimal key, so that bbolt's byte
// order of keys is the numeric order of rounds. It panics if r is negative
// or has more than ten digits: a round number outside that range is a bug.
func RoundKey(r int) string {
	if !roundInRange(r) {
		panic(fmt.Sprintf("ledger: round %d out of key range", r))
	}
	return fmt.Sprintf("%0*d", roundKeyDigits, r)
}

func roundInRange(r int) bool { return r >= 0 && r <= 9_999_999_999 }

// ParseRoundKey inverts RoundKey.
func ParseRoundKey(k string) (int, error) {
	if len(k) != roundKeyDigits {
		return 0, fmt.Errorf("ledger: round key %q: want %d digits", k, roundKeyDigits)
	}
	r, err := strconv.ParseUint(k, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("ledger: round key %q: %w", k, err)
	}
	return int(r), nil
}
