package main

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/client"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/manifest"
)

// simTrust is what a simulation holds its in-process clients to, as a real
// set-up would: a manifest signed by an owner key made for the run, a
// loopback TLS certificate it pins, and one identity key per client (in a
// temporary folder, removed by close). The receipt key is the state
// file's neighbour DB.receipt.key with --db (created if missing), else a
// key of the run: without --db a simulation issues no receipts.
type simTrust struct {
	m        *manifest.Manifest
	cert     tls.Certificate
	keyFiles map[string]string
	dir      string
}

func newSimTrust(job *engine.Job, db string) (*simTrust, error) {
	t := &simTrust{keyFiles: map[string]string{}}
	var err error
	if t.dir, err = os.MkdirTemp("", "tally-simulate-keys-"); err != nil {
		return nil, err
	}
	fail := func(err error) (*simTrust, error) {
		t.close()
		return nil, err
	}
	var pin []byte
	if t.cert, pin, err = loopbackCert(); err != nil {
		return fail(err)
	}
	var receipt ed25519.PublicKey
	if db != "" {
		abs, err := filepath.Abs(db + ".receipt.key")
		if err != nil {
			return fail(err)
		}
		k, _, err := loadOrCreateKey(abs)
		if err != nil {
			return fail(err)
		}
		receipt, job.JobConfig.ReceiptKey = k.Public().(ed25519.PublicKey), abs
	} else if receipt, _, err = ed25519.GenerateKey(rand.Reader); err != nil {
		return fail(err)
	}
	var ps []manifest.Participant
	for _, id := range job.ClientIDs() {
		path := filepath.Join(t.dir, id+".key")
		pub, err := client.CreateKeyFile(path)
		if err != nil {
			return fail(err)
		}
		t.keyFiles[id] = path
		ps = append(ps, manifest.Participant{ID: id, Key: manifest.HexBytes(pub)})
	}
	_, owner, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fail(err)
	}
	if t.m, err = buildManifest(*job, owner, receipt, pin, nil, ps, nil); err != nil {
		return fail(fmt.Errorf("the simulation's manifest: %w", err))
	}
	job.Pinned, job.Committee.Seed = t.m, t.m.Committee.Seed
	return t, nil
}

func (t *simTrust) close() {
	if t != nil && t.dir != "" {
		os.RemoveAll(t.dir)
	}
}

func (t *simTrust) serverTLS() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{t.cert}, MinVersion: tls.VersionTLS12}
}

func (t *simTrust) dial() grpc.DialOption {
	return grpc.WithTransportCredentials(client.PinnedTLS(t.m.TLSPins(), nil, nil))
}

// loopbackCert is a self-signed certificate for 127.0.0.1, in memory, and
// its pin.
func loopbackCert() (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "tally simulate"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	sum := sha256.Sum256(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, sum[:], nil
}

// checkTranscripts compares every simulated member's persisted decryption
// transcript (beside its key file) with the coordinator's: each must be a
// prefix of it, and each entry must be held by every participant that
// signed it. It reports what it found on out.
func (t *simTrust) checkTranscripts(store engine.Store, out io.Writer) error {
	if t == nil || store == nil {
		return nil
	}
	snap, err := store.Load()
	if err != nil {
		return err
	}
	if len(snap.Transcript) == 0 {
		return nil
	}
	coord := make([]aggregation.TranscriptEntry, len(snap.Transcript))
	for i, b := range snap.Transcript {
		if err := coord[i].UnmarshalBinary(b); err != nil {
			return fmt.Errorf("coordinator's transcript entry %d: %w", i, err)
		}
	}
	held := map[string]int{}
	for id, key := range t.keyFiles {
		b, err := os.ReadFile(key + ".transcript")
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		tr, err := aggregation.UnmarshalTranscript(b)
		if err != nil {
			return fmt.Errorf("member %s: transcript %s.transcript: %w", id, key, err)
		}
		n := tr.Len()
		if n > len(coord) || n > 0 && coord[n-1].Head() != tr.Head() {
			return fmt.Errorf("member %s holds a transcript of %d entries that is not a prefix of the coordinator's %d", id, n, len(coord))
		}
		held[id] = n
	}
	signed := 0
	for _, e := range coord {
		for id := range e.Signatures {
			signed++
			if held[id] <= int(e.Seq) {
				return fmt.Errorf("member %s signed transcript entry %d but its transcript has %d entries", id, e.Seq, held[id])
			}
		}
	}
	lo, hi := len(coord), 0
	for _, n := range held {
		lo, hi = min(lo, n), max(hi, n)
	}
	fmt.Fprintf(out, "members' transcripts: %d members hold %d to %d entries, each a prefix of the coordinator's %d; all %d signatures' entries are held by their signers\n", len(held), lo, hi, len(coord), signed)
	return nil
}
