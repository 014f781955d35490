package client

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
)

// CreateKeyFile creates a client key file (Config.KeyFile) holding a fresh
// Ed25519 key, readable by its owner only, and returns its public key: the
// identity a data holder sends the ML team to be listed in the job's
// manifest before the job starts (`tally client keygen`). An existing file
// is refused, never overwritten: it may be an enrolled identity.
func CreateKeyFile(path string) (ed25519.PublicKey, error) {
	if _, err := os.Stat(path); err == nil {
		return nil, fmt.Errorf("client: key file %s exists; it may hold an enrolled identity, so it is not replaced", path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("client: key file: %w", err)
	}
	s, err := loadSigner(path)
	if err != nil {
		return nil, err
	}
	return s.publicKey(), nil
}

// KeyFilePublicKey returns the public key of the client key file at path.
func KeyFilePublicKey(path string) (ed25519.PublicKey, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("client: key file: %w", err)
	}
	s, err := loadSigner(path)
	if err != nil {
		return nil, err
	}
	return s.publicKey(), nil
}
