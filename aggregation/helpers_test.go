package aggregation

import (
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
	pk      []byte
}

func memberID(i int) string { return fmt.Sprintf("m%02d", i) }

// newCommittee runs the whole key generation for c members, threshold t,
// routing the sealed shares as the coordinator would.
func newCommittee(t testing.TB, params Parameters, c, thr int) *committee {
	t.Helper()
	policy, err := NewPolicy(PolicyConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cm := &committee{params: params, members: map[string]*Member{}}
	var infos []MemberInfo
	for i := 0; i < c; i++ {
		id, err := NewIdentity(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		m, err := NewMember(params, memberID(i), id, policy, nil, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		cm.members[m.ID()] = m
		cm.ids = append(cm.ids, m.ID())
		infos = append(infos, m.Info())
	}
	cm.inst, err = NewKeyGenInstance(params, Committee{Job: "job", Seed: []byte("seed"), Threshold: thr, Members: infos})
	if err != nil {
		t.Fatal(err)
	}
	pkShares := map[string][]byte{}
	inbox := map[string]map[string][]byte{}
	for _, id := range cm.ids {
		out, err := cm.members[id].GenKeyGenShares(cm.inst)
		if err != nil {
			t.Fatal(err)
		}
		pkShares[id] = out.PublicKeyShare
		for to, s := range out.Sealed {
			if inbox[to] == nil {
				inbox[to] = map[string][]byte{}
			}
			inbox[to][id] = s
		}
	}
	for _, id := range cm.ids {
		if err := cm.members[id].ReceiveThresholdShares(cm.inst, inbox[id]); err != nil {
			t.Fatal(err)
		}
	}
	cm.pk, err = AggregatePublicKey(params, cm.inst, pkShares)
	if err != nil {
		t.Fatal(err)
	}
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
	for i, w := range weights {
		u := update(seed+uint64(i), numParams)
		updates = append(updates, u)
		cts, err = enc.EncryptUpdateInto(cts, u, w)
		if err != nil {
			t.Fatal(err)
		}
		for _, ct := range cts {
			if err := acc.Add(fmt.Sprintf("c%02d", i), ct); err != nil {
				t.Fatal(err)
			}
		}
	}
	agg, err := acc.Finalize()
	if err != nil {
		t.Fatal(err)
	}
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
			s, err := cm.members[p].DecryptShare(req, b, ct)
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
