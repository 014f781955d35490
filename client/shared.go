package client

import (
	"context"
	"crypto/sha256"
	"reflect"
	"runtime"
	"sync"

	"github.com/tallyfl/tally/aggregation"
)

// Shared is what clients running in one process may share to save memory,
// as `tally simulate` runs hundreds of them. It changes nothing on the
// wire: each client still enrols with its own token on its own
// connection, downloads the collective public key itself and uploads its
// own ciphertexts, so the coordinator cannot tell that the clients share a
// process.
//
// What is shared:
//
//   - The encryptor of a collective key. An aggregation.Encryptor holds a
//     CKKS encoder, a lattigo encryptor and buffers per worker: about 5 MiB
//     with two workers at LogN 14 (measured with 200 clients in one
//     process: 981 MB of 2.2 GB in use). Clients whose downloaded public
//     key is byte for byte the same use one encryptor, which is safe for
//     concurrent use.
//   - The CKKS parameters of a job. Their rings' NTT tables take about
//     1.5 MiB at LogN 14 (measured: 293 MB of 556 MB in use with 200
//     clients once encryptors were shared); clients of the same job
//     make them once.
//   - The right to hold ciphertexts. A client normally keeps its
//     ciphertext buffers for the next round; a client with Shared drops
//     them after each upload, and at most Busy clients encrypt and upload
//     at once, so that the ciphertexts in the process (13 blocks of
//     512 KiB for a 100k-parameter model) are bounded by Busy rather than
//     by the number of clients. With a few cores per process, more
//     concurrent encryptions would not finish sooner anyway.
//
// A Shared is safe for concurrent use. The zero value is not usable; use
// NewShared.
type Shared struct {
	mu     sync.Mutex
	pk     [32]byte // SHA-256 of the public key enc was made from
	enc    *aggregation.Encryptor
	config *aggregation.ParametersConfig // what params were made from
	params aggregation.Parameters

	busy chan struct{}
	// unpinned: the unpinned-committee warning is logged once per process.
	unpinned sync.Once
}

// NewShared returns state for clients of one process. busy bounds how
// many of them encrypt and upload at once (≤ 0: 2·GOMAXPROCS, enough to
// overlap one client's upload with another's encryption on each core).
func NewShared(busy int) *Shared {
	if busy <= 0 {
		busy = 2 * runtime.GOMAXPROCS(0)
	}
	return &Shared{busy: make(chan struct{}, busy)}
}

// parameters returns the CKKS parameters of cfg, made once per
// configuration; on a nil Shared it makes them every time.
func (s *Shared) parameters(cfg aggregation.ParametersConfig) (aggregation.Parameters, error) {
	if s == nil {
		return aggregation.NewParameters(cfg)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.config != nil && reflect.DeepEqual(*s.config, cfg) {
		return s.params, nil
	}
	p, err := aggregation.NewParameters(cfg)
	if err != nil {
		return p, err
	}
	s.config, s.params = &cfg, p
	return p, nil
}

// encryptor returns the encryptor of the marshalled public key pk, made
// once per key. Only the latest key's encryptor is kept: a new key
// generation replaces the collective key for every client.
func (s *Shared) encryptor(params aggregation.Parameters, pk []byte) (*aggregation.Encryptor, error) {
	sum := sha256.Sum256(pk)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.enc != nil && s.pk == sum {
		return s.enc, nil
	}
	enc, err := aggregation.NewEncryptor(params, pk, 0)
	if err != nil {
		return nil, err
	}
	s.pk, s.enc = sum, enc
	return enc, nil
}

// acquire waits for the right to encrypt and upload; release gives it back.
func (s *Shared) acquire(ctx context.Context) error {
	select {
	case s.busy <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Shared) release() { <-s.busy }
