package client

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"google.golang.org/grpc"

	"github.com/tallyfl/tally/internal/auth"
)

// keyFile is what a client keeps in Config.KeyFile: the seed of the Ed25519
// key it enrolled with and, once enrolled, the job and the identity the
// key is bound to. With it a restarted client resumes instead of enrolling
// again (its token was used up).
type keyFile struct {
	Job    string `json:"job,omitempty"`
	Client string `json:"client,omitempty"`
	Seed   []byte `json:"ed25519_seed"`
}

// signer holds the client's call-signing key and the identity it signs as.
type signer struct {
	key         ed25519.PrivateKey
	mu          sync.Mutex
	job, client string // empty until enrolled
}

// loadSigner reads the key file at path, or creates it with a fresh key
// (readable by its owner only) if it does not exist; with an empty path
// the key lives in memory only. The file is written before the key is ever
// sent, so a client killed during enrolment finds its key on restart.
func loadSigner(path string) (*signer, error) {
	s := &signer{}
	if path != "" {
		b, err := os.ReadFile(path)
		switch {
		case err == nil:
			var f keyFile
			if err := json.Unmarshal(b, &f); err != nil || len(f.Seed) != ed25519.SeedSize {
				return nil, fmt.Errorf("client: key file %s: not a tally client key (want JSON with a %d-byte ed25519_seed)", path, ed25519.SeedSize)
			}
			s.key, s.job, s.client = ed25519.NewKeyFromSeed(f.Seed), f.Job, f.Client
			return s, nil
		case !errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("client: key file: %w", err)
		}
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	s.key = key
	if path != "" {
		if err := s.save(path); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// save writes the key file atomically (a temporary file renamed over it).
func (s *signer) save(path string) error {
	s.mu.Lock()
	f := keyFile{Job: s.job, Client: s.client, Seed: s.key.Seed()}
	s.mu.Unlock()
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tally-key-*")
	if err != nil {
		return fmt.Errorf("client: key file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("client: key file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("client: key file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("client: key file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("client: key file: %w", err)
	}
	return nil
}

func (s *signer) publicKey() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

func (s *signer) identity() (job, client string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.job, s.client
}

func (s *signer) bind(job, client string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.job, s.client = job, client
}

// conn signs every call made through cc as this client.
func (s *signer) conn(cc grpc.ClientConnInterface) grpc.ClientConnInterface {
	return auth.Conn(cc, func() (ed25519.PrivateKey, string, string) {
		job, client := s.identity()
		return s.key, job, client
	}, nil)
}
