package ledger

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// ErrPublicKey means a printed public key could not be parsed.
var ErrPublicKey = errors.New("ledger: malformed public key")

// SigningKey returns the coordinator's Ed25519 key, creating it at the first
// call (from Options.Rand, crypto/rand by default) and storing its 32-byte
// seed in this same file.
//
// Why the same file: the key and the ledger it signs are one unit to back
// up, move and restore; a ledger restored without its key could never be
// extended, and a key restored without its ledger would sign a second chain.
// The risk: whoever can read the file (or a backup of it) can sign receipts
// in the coordinator's name, so the file is created with mode 0600 and its
// backups need the same care as a private key. Verification never needs the
// file: clients and auditors check receipts against the published public key.
//
// SigningKey must not be called from inside Update or View on the same DB.
func (db *DB) SigningKey() (ed25519.PrivateKey, error) {
	db.keyMu.Lock()
	defer db.keyMu.Unlock()
	if db.key != nil {
		return db.key, nil
	}
	var seed []byte
	err := db.bolt.View(func(tx *bolt.Tx) error {
		seed = cloneOrNil(tx.Bucket([]byte(bucketMeta)).Get([]byte(metaKeySigningKey)))
		return nil
	})
	if err != nil {
		return nil, err
	}
	if seed == nil {
		if db.readOnly {
			return nil, fmt.Errorf("%w: %s", ErrNoKey, db.path)
		}
		r := db.rand
		if r == nil {
			r = rand.Reader
		}
		_, priv, err := ed25519.GenerateKey(r)
		if err != nil {
			return nil, fmt.Errorf("ledger: generate signing key: %w", err)
		}
		// Put the seed only if no other DB handle raced us to it; the lock
		// makes that impossible across processes, but stay correct anyway.
		err = db.bolt.Update(func(tx *bolt.Tx) error {
			m := tx.Bucket([]byte(bucketMeta))
			if s := m.Get([]byte(metaKeySigningKey)); s != nil {
				seed = cloneOrNil(s)
				return nil
			}
			seed = priv.Seed()
			return m.Put([]byte(metaKeySigningKey), seed)
		})
		if err != nil {
			return nil, fmt.Errorf("ledger: store signing key: %w", err)
		}
	}
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%w: %s: stored signing key has %d bytes", ErrFormat, db.path, len(seed))
	}
	db.key = ed25519.NewKeyFromSeed(seed)
	return db.key, nil
}

// PublicKey returns the public half of the signing key. On a writable DB it
// creates the key if needed; on a read-only DB without a key it returns
// ErrNoKey.
func (db *DB) PublicKey() (ed25519.PublicKey, error) {
	k, err := db.SigningKey()
	if err != nil {
		return nil, err
	}
	return k.Public().(ed25519.PublicKey), nil
}

// FormatPublicKey prints pub as 64 lower-case hex digits, the form the
// coordinator logs and serves and clients pass to verification.
func FormatPublicKey(pub ed25519.PublicKey) string { return hex.EncodeToString(pub) }

// ParsePublicKey accepts the hex form of FormatPublicKey or standard base64
// (44 characters with padding), surrounding spaces ignored.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	var b []byte
	var err error
	switch len(s) {
	case 2 * ed25519.PublicKeySize:
		b, err = hex.DecodeString(s)
	case base64.StdEncoding.EncodedLen(ed25519.PublicKeySize):
		b, err = base64.StdEncoding.Strict().DecodeString(s)
	default:
		return nil, fmt.Errorf("%w: %d characters, want 64 hex or 44 base64", ErrPublicKey, len(s))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPublicKey, err)
	}
	return ed25519.PublicKey(b), nil
}

func cloneOrNil(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}
