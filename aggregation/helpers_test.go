package aggregation

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	mrand "math/rand/v2"
	"testing"
)

// testParams is a small, INSECURE parameter set (LogN 10: 1024 slots, log
// QP = 181 bits against a 27-bit bound) so the crypto tests run in seconds
// under the race detector. It exists only in test files.
func testParams(t testing.TB) Parameters {
	t.Helper()
	cfg := DefaultConfig()
	cfg.LogN = 10
	cfg.Insecure = true
	p, err := NewParameters(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// committee is a key-generated committee for tests.
type committee struct {
	params  Parameters
	inst    *KeyGenInstance
	members map[string]*Member
	ids     []string
	keys    pinnedKeys
	pk      []byte
	cert    []byte
	// sources maps a ciphertext digest (an aggregate's block 0, an
	// influence ciphertext) to the client ciphertexts it was made from,
	// which verifyRequest signs and relays as the evidence.
	sources map[[32]byte]*testSource
	// pending collects what add accumulated, for aggregates not
	// registered by digest.
	pending *testSource
}

func memberID(i int) string { return fmt.Sprintf("m%02d", i) }

// pinnedKeys is a MemberKeys the test controls, as a manifest would be.
type pinnedKeys map[string]ed25519.PublicKey

func (k pinnedKeys) IdentityKey(id string) (ed25519.PublicKey, bool) {
	key, ok := k[id]
	return key, ok
}

// newTestMember makes member id with fresh X25519 and Ed25519 keys; keys
// may be nil (the instance's listed keys are used).
func newTestMember(t testing.TB, params Parameters, id string, policy Policy, keys MemberKeys) *Member {
	t.Helper()
	x, err := NewIdentity(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMember(params, id, x, sk, keys, policy, nil, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// newTestMembers makes c members m00… with their keys pinned in the
// returned MemberKeys, which every member uses.
func newTestMembers(t testing.TB, params Parameters, c int, policy Policy) ([]*Member, pinnedKeys) {
	t.Helper()
	keys := pinnedKeys{}
	var ms []*Member
	for i := 0; i < c; i++ {
		m := newTestMember(t, params, memberID(i), policy, keys)
		keys[m.ID()] = m.Info().SigningKey
		ms = append(ms, m)
	}
	return ms, keys
}

func infosOf(ms []*Member) []MemberInfo {
	var out []MemberInfo
	for _, m := range ms {
		out = append(out, m.Info())
	}
	return out
}

// runKeyGen runs the whole authenticated key generation of inst among ms,
// routing every message as an honest coordinator would; it returns the
// collective key and its certificate.
func runKeyGen(t testing.TB, params Parameters, inst *KeyGenInstance, ms []*Member) (pk, cert []byte) {
	t.Helper()
	commitments := map[string][]byte{}
	for _, m := range ms {
		c, err := m.Commit(inst)
		if err != nil {
			t.Fatal(err)
		}
		commitments[m.ID()] = c
	}
	pkShares := map[string][]byte{}
	inbox := map[string]map[string][]byte{}
	for _, m := range ms {
		out, err := m.Reveal(inst, commitments)
		if err != nil {
			t.Fatal(err)
		}
		pkShares[m.ID()] = out.PublicKeyShare
		for to, s := range out.Sealed {
			if inbox[to] == nil {
				inbox[to] = map[string][]byte{}
			}
			inbox[to][m.ID()] = s
		}
	}
	sigs := map[string][]byte{}
	for _, m := range ms {
		key, sig, err := m.CertifyPublicKey(inst, pkShares)
		if err != nil {
			t.Fatal(err)
		}
		if pk != nil && !bytes.Equal(pk, key) {
			t.Fatalf("members %s aggregated another collective key", m.ID())
		}
		pk, sigs[m.ID()] = key, sig
		if err := m.ReceiveThresholdShares(inst, inbox[m.ID()]); err != nil {
			t.Fatal(err)
		}
	}
	cert, err := (&KeyCertificate{Instance: inst, Signatures: sigs}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return pk, cert
}

// newCommittee runs the whole key generation for c members, threshold t,
// routing the messages as the coordinator would.
func newCommittee(t testing.TB, params Parameters, c, thr int) *committee {
	t.Helper()
	policy, err := NewPolicy(PolicyConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cm := &committee{params: params, members: map[string]*Member{}, sources: map[[32]byte]*testSource{}}
	ms, keys := newTestMembers(t, params, c, policy)
	cm.keys = keys
	for _, m := range ms {
		cm.members[m.ID()] = m
		cm.ids = append(cm.ids, m.ID())
	}
	cm.inst, err = NewKeyGenInstance(params, Committee{Job: "job", Seed: []byte("seed"), Threshold: thr, Members: infosOf(ms)})
	if err != nil {
		t.Fatal(err)
	}
	cm.pk, cm.cert = runKeyGen(t, params, cm.inst, ms)
	return cm
}

// update draws a deterministic update vector in [-1, 1).
func update(seed uint64, n int) []float64 {
	r := mrand.New(mrand.NewPCG(seed, 7))
	out := make([]float64, n)
	for i := range out {
		out[i] = 2*r.Float64() - 1
	}
	return out
}

// encryptedRound encrypts the updates of len(weights) clients and
// accumulates them; it returns the aggregate and the plaintext FedAvg.
func encryptedRound(t testing.TB, cm *committee, numParams int, weights []float64, seed uint64) (*Aggregate, []float64) {
	t.Helper()
	enc, err := NewEncryptor(cm.params, cm.pk, 2)
	if err != nil {
		t.Fatal(err)
	}
	acc, err := NewAccumulator(cm.params, cm.inst.ID(), numParams)
	if err != nil {
		t.Fatal(err)
	}
	var updates [][]float64
	// The accumulator keeps nothing of what it is given, so each client
	// reuses the previous one's buffers, exercising EncryptUpdateInto.
	var cts [][]byte
	src := &testSource{cts: map[string][][]byte{}, weights: map[string]float64{}}
	for i, w := range weights {
		u := update(seed+uint64(i), numParams)
		updates = append(updates, u)
		cts, err = enc.EncryptUpdateInto(cts, u, w)
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("c%02d", i)
		for _, ct := range cts {
			if err := acc.Add(id, ct); err != nil {
				t.Fatal(err)
			}
		}
		src.cts[id], src.weights[id] = cloneAll(cts), w
	}
	agg, err := acc.Finalize()
	if err != nil {
		t.Fatal(err)
	}
	cm.register(agg.Digests[0], src)
	want, err := FedAvg(updates, weights)
	if err != nil {
		t.Fatal(err)
	}
	return agg, want
}

// decrypt asks the participants for shares of every block and combines.
func decrypt(t testing.TB, cm *committee, agg *Aggregate, round uint64, participants []string) ([]float64, float64, error) {
	t.Helper()
	req := NewDecryptRequest(agg, "total", round, participants)
	dec, err := NewDecryptor(cm.params, cm.inst)
	if err != nil {
		t.Fatal(err)
	}
	blocks := make([][]float64, len(agg.Ciphertexts))
	for b, ct := range agg.Ciphertexts {
		shares := map[string][]byte{}
		for _, p := range req.Participants {
			if b == 0 {
				if err := cm.verifyRequest(t, p, req, agg.Ciphertexts, nil); err != nil {
					return nil, 0, err
				}
			}
			s, err := cm.members[p].admitDecryptShare(req, b, ct)
			if err != nil {
				return nil, 0, err
			}
			shares[p] = s
		}
		blocks[b], err = dec.CombineBlock(req, b, ct, shares)
		if err != nil {
			return nil, 0, err
		}
	}
	return Assemble(agg.NumParams, blocks)
}

func maxAbsDiff(a, b []float64) float64 {
	m := 0.0
	for i := range a {
		d := a[i] - b[i]
		if d < 0 {
			d = -d
		}
		if d > m {
			m = d
		}
	}
	return m
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

// testSource is what an aggregate or influence ciphertext of a test was
// made from: every client's block ciphertexts and weight, and the
// multiplier vector of an influence round.
type testSource struct {
	cts     map[string][][]byte
	weights map[string]float64
	grad    []float64
}

func cloneAll(cts [][]byte) [][]byte {
	out := make([][]byte, len(cts))
	for i, ct := range cts {
		out[i] = bytes.Clone(ct)
	}
	return out
}

// register records src as the origin of the ciphertext with digest d.
func (cm *committee) register(d [32]byte, src *testSource) { cm.sources[d] = src }

// clientKey is test client id's Ed25519 identity key, derived from its
// name; it is pinned in cm.keys the first time it is asked for.
func (cm *committee) clientKey(id string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("test client key/" + id))
	sk := ed25519.NewKeyFromSeed(seed[:])
	if _, ok := cm.keys[id]; !ok {
		cm.keys[id] = sk.Public().(ed25519.PublicKey)
	}
	return sk
}

// evidence is what an honest coordinator relays for req: the signed
// submissions of its contributors (signed here, for the request's round
// and attempt, as each client would have signed its upload) and their c₁.
func (cm *committee) evidence(t testing.TB, req DecryptRequest, cts [][]byte) Evidence {
	t.Helper()
	src, ok := cm.sources[req.Digests[0]]
	if !ok && cm.pending != nil {
		src, ok = cm.pending, true
	}
	if !ok {
		t.Fatalf("no registered source for digest %x", req.Digests[0][:8])
	}
	ev := Evidence{Ciphertexts: cts, Submissions: map[string][]byte{}}
	for _, id := range req.Contributors {
		blocks, ok := src.cts[id]
		if !ok {
			continue
		}
		sub, err := NewSubmission(cm.params, cm.inst.Job(), id, req.Round, req.Attempt, uint64(src.weights[id]), blocks, cm.clientKey(id))
		if err != nil {
			t.Fatal(err)
		}
		if ev.Submissions[id], err = sub.MarshalBinary(); err != nil {
			t.Fatal(err)
		}
	}
	ev.Contribution = func(client string, b int) ([]byte, error) {
		blocks, ok := src.cts[client]
		if !ok || b >= len(blocks) {
			return nil, fmt.Errorf("no contribution %s/%d", client, b)
		}
		return ContributionC1(blocks[b]), nil
	}
	if req.Purpose == PurposeInfluence {
		ev.Gradient = src.grad
	}
	return ev
}

// verifyRequest has member p verify req with the honest evidence; mutate,
// if not nil, changes the evidence first (an attack).
func (cm *committee) verifyRequest(t testing.TB, p string, req DecryptRequest, cts [][]byte, mutate func(*Evidence)) error {
	t.Helper()
	ev := cm.evidence(t, req, cts)
	if mutate != nil {
		mutate(&ev)
	}
	return cm.members[p].VerifyAggregate(req, ev)
}

// verifyAll has every participant of req verify it, failing the test on a
// refusal.
func (cm *committee) verifyAll(t testing.TB, req DecryptRequest, cts [][]byte) {
	t.Helper()
	for _, p := range req.Participants {
		if err := cm.verifyRequest(t, p, req, cts, nil); err != nil {
			t.Fatalf("member %s: %v", p, err)
		}
	}
}

// gradientDigest is the commitment to the multiplier vector the
// ciphertext with digest d was made with (zero if none).
func (cm *committee) gradientDigest(d [32]byte) [32]byte {
	if src, ok := cm.sources[d]; ok && src.grad != nil {
		return GradientDigest(src.grad)
	}
	return [32]byte{}
}

// add accumulates client id's ciphertexts into acc and records them as
// the evidence of aggregates with no registered source.
func (cm *committee) add(acc *Accumulator, id string, cts [][]byte, weight float64) error {
	if cm.pending == nil {
		cm.pending = &testSource{cts: map[string][][]byte{}, weights: map[string]float64{}}
	}
	cm.pending.cts[id], cm.pending.weights[id] = cloneAll(cts), weight
	for _, ct := range cts {
		if err := acc.Add(id, ct); err != nil {
			return err
		}
	}
	return nil
}

// admitDecryptShare admits req with no transcript entries from elsewhere
// (the member's own chain only) and returns its share of block.
func (m *Member) admitDecryptShare(req DecryptRequest, block int, ct []byte) ([]byte, error) {
	if _, err := m.Admit(req, nil); err != nil {
		return nil, err
	}
	return m.DecryptShare(req, block, ct)
}

// admitCoefficientShare is admitDecryptShare for a coefficient share.
func (m *Member) admitCoefficientShare(req DecryptRequest, ct []byte) ([]byte, error) {
	if _, err := m.Admit(req, nil); err != nil {
		return nil, err
	}
	return m.DecryptCoefficientShare(req, ct)
}

// forget clears what a member took part in, so that a benchmark can time
// the same aggregate again.
func (m *Member) forget() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.transcript, m.admitted, m.served, m.blocks, m.scalars = nil, map[[32]byte][]byte{}, map[[32]byte]bool{}, 0, 0
}
