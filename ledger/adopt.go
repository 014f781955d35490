package ledger

import (
	"crypto/ed25519"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// ErrOtherKey means the database holds a signing key other than the one it
// was asked to sign with.
var ErrOtherKey = errors.New("ledger: the state file holds another signing key")

// AdoptSigningKey makes key this file's signing key: a file with no key yet
// stores key's seed; a file whose key is key is left alone; a file that
// holds another key is refused with ErrOtherKey, naming both public keys,
// and left as it was. A coordinator whose receipt key is pinned in a job
// manifest signs with that key or not at all: a state file with another key
// would sign a chain no client accepts.
//
// AdoptSigningKey must not be called from inside Update or View.
func (db *DB) AdoptSigningKey(key ed25519.PrivateKey) error {
	if len(key) != ed25519.PrivateKeySize {
		return fmt.Errorf("ledger: adopt signing key: %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	db.keyMu.Lock()
	defer db.keyMu.Unlock()
	var held []byte
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		m := tx.Bucket([]byte(bucketMeta))
		if s := m.Get([]byte(metaKeySigningKey)); s != nil {
			held = cloneOrNil(s)
			return nil
		}
		return m.Put([]byte(metaKeySigningKey), key.Seed())
	})
	if err != nil {
		return fmt.Errorf("ledger: store signing key: %w", err)
	}
	if held != nil {
		if len(held) != ed25519.SeedSize {
			return fmt.Errorf("%w: %s: stored signing key has %d bytes", ErrFormat, db.path, len(held))
		}
		if have := ed25519.NewKeyFromSeed(held); !have.Equal(key) {
			return fmt.Errorf("%w: %s signs with %s, the key file's key is %s", ErrOtherKey, db.path,
				FormatPublicKey(have.Public().(ed25519.PublicKey)), FormatPublicKey(key.Public().(ed25519.PublicKey)))
		}
	}
	db.key = key
	return nil
}
