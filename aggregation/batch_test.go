package aggregation

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"testing"
)

// serveBatch is what a member does with a batch task (client/secure.go):
// verify every request with its evidence (mutate[i], if set, changes
// request i's: an attack), admit the batch, then produce each share. Any
// refusal refuses the whole batch: no share is returned.
func serveBatch(t *testing.T, cm *committee, p string, reqs []DecryptRequest, cts [][]byte, mutate map[int]func(*Evidence)) (map[int][]byte, []byte, error) {
	t.Helper()
	m := cm.members[p]
	for i, req := range reqs {
		if err := cm.verifyRequest(t, p, req, [][]byte{cts[i]}, mutate[i]); err != nil {
			return nil, nil, fmt.Errorf("batch request %d: %w", i, err)
		}
	}
	sig, err := m.AdmitBatch(reqs, nil)
	if err != nil {
		return nil, nil, err
	}
	out := map[int][]byte{}
	for i, req := range reqs {
		s, err := m.DecryptCoefficientShare(req, cts[i])
		if err != nil {
			return nil, nil, fmt.Errorf("batch request %d: %w", i, err)
		}
		out[i] = s
	}
	return out, sig, nil
}

// An honest batch: every member admits the round's scalars as consecutive
// transcript entries with one signature of the last head, any t answers
// combine each request within the precision bound, and a retransmission
// gets the same signature and no second share.
func TestBatchHonest(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 4, 3)
	c := realisticCase(7, 300, []float64{5, 50, 500}, false)
	cts, digests := influenceRun(t, cm, c)
	dec, err := NewDecryptor(params, cm.inst)
	if err != nil {
		t.Fatal(err)
	}
	reqs := make([]DecryptRequest, len(c.clients))
	for i, id := range c.clients {
		reqs[i] = NewInfluenceRequest(cm.inst.ID(), 1, id, digests[i], GradientDigest(c.grad), cm.ids)
	}
	shares := map[string]map[int][]byte{}
	for _, p := range cm.ids[:3] {
		s, sig, err := serveBatch(t, cm, p, reqs, cts, nil)
		if err != nil {
			t.Fatalf("member %s: %v", p, err)
		}
		shares[p] = s
		m := cm.members[p]
		if n := m.transcript.Len(); n != len(reqs) {
			t.Fatalf("member %s holds %d entries, want %d", p, n, len(reqs))
		}
		last, _ := m.transcript.Entry(len(reqs) - 1)
		if !bytes.Equal(last.Signatures[p], sig) || last.Head() != m.transcript.Head() {
			t.Fatalf("member %s: the batch's signature is not on its last entry", p)
		}
		if err := last.Verify(cm.keys.IdentityKey, false); err != nil {
			t.Fatal(err)
		}
		again, err := m.AdmitBatch(reqs, nil)
		if err != nil || !bytes.Equal(again, sig) {
			t.Fatalf("retransmitted batch: %v, same signature %v", err, bytes.Equal(again, sig))
		}
		if _, err := m.DecryptCoefficientShare(reqs[0], cts[0]); !errors.Is(err, ErrAlreadyServed) {
			t.Fatalf("second share of request 0: %v, want ErrAlreadyServed", err)
		}
	}
	for i := range reqs {
		per := map[string][]byte{}
		for p, s := range shares {
			per[p] = s[i]
		}
		got, err := dec.CombineCoefficient(reqs[i], cts[i], per)
		if err != nil {
			t.Fatal(err)
		}
		want, bound, _ := c.want(params, i)
		if e := math.Abs(got - want); e > bound {
			t.Fatalf("request %d: aᵢ = %.9g, want %.9g: error %.3g beyond %.3g", i, got, want, e, bound)
		}
	}
}

// A batch with one forged request among honest ones is refused whole, by
// the forged request's named error, and no request of it gets a share:
// (a) the product with a vector not the committed one, (b) one client
// twice, (c) a c₁ its client did not sign, (d) a request whose product was
// decrypted in an earlier batch.
func TestAttackBatchOneForged(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	c := realisticCase(31, 50, []float64{10, 20, 30}, false)
	cts, digests := influenceRun(t, cm, c)
	committed := GradientDigest(c.grad)
	honest := func(i int) DecryptRequest {
		return NewInfluenceRequest(cm.inst.ID(), 1, c.clients[i], digests[i], committed, cm.ids)
	}

	// (a) The coordinator's unit vector e_7 applied to c01's signed
	// ciphertexts, under the round's committed digest.
	unit := make([]float64, len(c.grad))
	unit[7] = 1
	inf, err := NewInfluence(params, cm.inst.ID(), unit, len(unit))
	if err != nil {
		t.Fatal(err)
	}
	for _, ct := range cm.sources[digests[1]].cts["c01"] {
		if err := inf.Add("c01", ct); err != nil {
			t.Fatal(err)
		}
	}
	readOne, readOneDigest, err := inf.Finalize("c01")
	if err != nil {
		t.Fatal(err)
	}
	cm.register(readOneDigest, cm.sources[digests[1]])

	cases := []struct {
		name   string
		reqs   []DecryptRequest
		cts    [][]byte
		mutate map[int]func(*Evidence)
		want   error
	}{
		{"product with a vector not committed",
			[]DecryptRequest{honest(0), NewInfluenceRequest(cm.inst.ID(), 1, "c01", readOneDigest, committed, cm.ids), honest(2)},
			[][]byte{cts[0], readOne, cts[2]}, nil, ErrProductMismatch},
		{"one client twice",
			[]DecryptRequest{honest(0), honest(1), NewInfluenceRequest(cm.inst.ID(), 1, "c01", digests[1], committed, cm.ids[:2])},
			[][]byte{cts[0], cts[1], cts[1]}, nil, ErrAlreadyServed},
		{"a c1 not signed",
			[]DecryptRequest{honest(0), honest(1), honest(2)}, cts,
			map[int]func(*Evidence){2: func(ev *Evidence) {
				inner := ev.Contribution
				ev.Contribution = func(client string, b int) ([]byte, error) {
					c1, err := inner(client, b)
					if err != nil {
						return nil, err
					}
					c1 = bytes.Clone(c1)
					c1[0] ^= 1
					return c1, nil
				}
			}}, ErrNotASum},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A fresh committee state per case: members that refused
			// nothing before.
			for _, m := range cm.members {
				m.forget()
				m.verify = nil
			}
			p := cm.ids[0]
			shares, sig, err := serveBatch(t, cm, p, tc.reqs, tc.cts, tc.mutate)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if shares != nil || sig != nil {
				t.Fatal("a refused batch returned shares or a signature")
			}
			t.Logf("refused: %v", err)
			// No request of the batch can be served afterwards.
			for i, req := range tc.reqs {
				if _, err := cm.members[p].DecryptCoefficientShare(req, tc.cts[i]); err == nil {
					t.Fatalf("request %d of the refused batch was served", i)
				}
			}
		})
	}

	t.Run("a product decrypted in an earlier batch", func(t *testing.T) {
		for _, m := range cm.members {
			m.forget()
			m.verify = nil
		}
		p := cm.ids[0]
		if _, _, err := serveBatch(t, cm, p, []DecryptRequest{honest(0)}, cts[:1], nil); err != nil {
			t.Fatal(err)
		}
		_, _, err := serveBatch(t, cm, p, []DecryptRequest{honest(1), honest(0), honest(2)}, [][]byte{cts[1], cts[0], cts[2]}, nil)
		if !errors.Is(err, ErrAlreadyServed) {
			t.Fatalf("err = %v, want ErrAlreadyServed", err)
		}
		for _, i := range []int{1, 2} {
			if _, err := cm.members[p].DecryptCoefficientShare(honest(i), cts[i]); !errors.Is(err, ErrNotAdmitted) {
				t.Fatalf("request for c0%d of the refused batch: %v, want ErrNotAdmitted", i, err)
			}
		}
	})
}

// A member that restarts mid-batch — the batch admitted and its transcript
// persisted, some shares produced, the process gone before it answered —
// never produces a share of it twice: the restarted member, with the
// persisted transcript, refuses the same batch with ErrAlreadyServed.
func TestBatchRestartMidBatch(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	c := realisticCase(13, 50, []float64{1, 2, 3}, false)
	cts, digests := influenceRun(t, cm, c)
	reqs := make([]DecryptRequest, len(c.clients))
	for i, id := range c.clients {
		reqs[i] = NewInfluenceRequest(cm.inst.ID(), 1, id, digests[i], GradientDigest(c.grad), cm.ids)
	}
	p := cm.ids[0]
	m := cm.members[p]
	for i, req := range reqs {
		if err := cm.verifyRequest(t, p, req, [][]byte{cts[i]}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.AdmitBatch(reqs, nil); err != nil {
		t.Fatal(err)
	}
	raw, err := m.MarshalTranscript() // what the client persists before any share
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.DecryptCoefficientShare(reqs[0], cts[0]); err != nil {
		t.Fatal(err)
	}
	// The crash: the share of request 0 was made, none was sent.
	restored, err := UnmarshalTranscript(raw)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := NewMember(params, p, m.identity, m.signer, m.keys, m.policy, restored, m.rand)
	if err != nil {
		t.Fatal(err)
	}
	m2.inst, m2.tsk, m2.combiner, m2.pk, m2.pkSig = m.inst, m.tsk, m.combiner, m.pk, m.pkSig
	for i, req := range reqs {
		ev := cm.evidence(t, req, [][]byte{cts[i]})
		if err := m2.VerifyAggregate(req, ev); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if _, err := m2.AdmitBatch(reqs, nil); !errors.Is(err, ErrAlreadyServed) {
		t.Fatalf("restarted member admits the batch again: %v, want ErrAlreadyServed", err)
	}
	for i, req := range reqs {
		if _, err := m2.DecryptCoefficientShare(req, cts[i]); !errors.Is(err, ErrNotAdmitted) {
			t.Fatalf("restarted member, request %d: %v, want ErrNotAdmitted", i, err)
		}
		// Nor one request at a time.
		if _, err := m2.Admit(req, nil); !errors.Is(err, ErrAlreadyServed) {
			t.Fatalf("restarted member, request %d alone: %v, want ErrAlreadyServed", i, err)
		}
	}
}

// AdmitBatch takes influence requests only, each naming this member and
// verified by it.
func TestAdmitBatchRejects(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	c := realisticCase(17, 50, []float64{1, 2, 3}, false)
	cts, digests := influenceRun(t, cm, c)
	m := cm.members[cm.ids[0]]
	good := NewInfluenceRequest(cm.inst.ID(), 1, "c00", digests[0], GradientDigest(c.grad), cm.ids)
	if err := cm.verifyRequest(t, m.ID(), good, [][]byte{cts[0]}, nil); err != nil {
		t.Fatal(err)
	}
	unverified := NewInfluenceRequest(cm.inst.ID(), 1, "c01", digests[1], GradientDigest(c.grad), cm.ids)
	agg, _ := encryptedRound(t, cm, 40, []float64{1, 2, 3}, 5)
	for name, tc := range map[string]struct {
		reqs []DecryptRequest
		want error
	}{
		"empty":                {nil, ErrInvalidInput},
		"a whole decryption":   {[]DecryptRequest{good, NewDecryptRequest(agg, "round", 1, cm.ids[:2])}, ErrPolicy},
		"not a participant":    {[]DecryptRequest{NewInfluenceRequest(cm.inst.ID(), 1, "c00", digests[0], GradientDigest(c.grad), cm.ids[1:])}, ErrNotMember},
		"one request twice":    {[]DecryptRequest{good, good}, ErrAlreadyServed},
		"too few participants": {[]DecryptRequest{NewInfluenceRequest(cm.inst.ID(), 1, "c00", digests[0], GradientDigest(c.grad), cm.ids[:1])}, ErrInvalidInput},
		"one not verified":     {[]DecryptRequest{good, unverified}, ErrNotVerified},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := m.AdmitBatch(tc.reqs, nil); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if m.transcript != nil && m.transcript.Len() != 0 {
				t.Fatalf("a refused batch left %d entries", m.transcript.Len())
			}
		})
	}
}

// A batch's requests may multiply different committed vectors (up to L
// per round, the shape a projection mode needs): with L = 2, each client's
// products with two vectors go in one batch and each combines to its own
// scalar; a third vector in the same batch is refused whole with
// ErrGradientMismatch.
func TestBatchTwoVectors(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	policy, err := NewPolicy(PolicyConfig{MaxScalarsPerRound: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range cm.members {
		m.policy = policy
	}
	c := realisticCase(23, 80, []float64{3, 4}, false)
	cts1, digests1 := influenceRun(t, cm, c)
	src1 := cm.sources[digests1[0]]
	product := func(grad []float64) ([][]byte, [][32]byte) {
		src := &testSource{cts: src1.cts, weights: src1.weights, grad: grad}
		var cts [][]byte
		var ds [][32]byte
		for _, id := range c.clients {
			inf, err := NewInfluence(params, cm.inst.ID(), grad, len(grad))
			if err != nil {
				t.Fatal(err)
			}
			for _, ct := range src.cts[id] {
				if err := inf.Add(id, ct); err != nil {
					t.Fatal(err)
				}
			}
			ct, d, err := inf.Finalize(id)
			if err != nil {
				t.Fatal(err)
			}
			cm.register(d, src)
			cts, ds = append(cts, ct), append(ds, d)
		}
		return cts, ds
	}
	g2 := make([]float64, len(c.grad))
	for j := range g2 {
		g2[j] = c.grad[len(c.grad)-1-j]
	}
	cts2, digests2 := product(g2)
	var reqs []DecryptRequest
	var cts [][]byte
	var want []float64
	for i, id := range c.clients {
		for k, g := range [][]float64{c.grad, g2} {
			d, ct := digests1[i], cts1[i]
			if k == 1 {
				d, ct = digests2[i], cts2[i]
			}
			reqs = append(reqs, NewInfluenceRequest(cm.inst.ID(), 1, id, d, GradientDigest(g), cm.ids))
			cts = append(cts, ct)
			var a float64
			for j, x := range c.updates[i] {
				a += g[j] * c.weights[i] * x
			}
			want = append(want, a)
		}
	}
	dec, err := NewDecryptor(params, cm.inst)
	if err != nil {
		t.Fatal(err)
	}
	shares := map[string]map[int][]byte{}
	for _, p := range cm.ids[:2] {
		s, _, err := serveBatch(t, cm, p, reqs, cts, nil)
		if err != nil {
			t.Fatalf("member %s: %v", p, err)
		}
		shares[p] = s
	}
	for i, req := range reqs {
		per := map[string][]byte{}
		for p, s := range shares {
			per[p] = s[i]
		}
		got, err := dec.CombineCoefficient(req, cts[i], per)
		if err != nil {
			t.Fatal(err)
		}
		if e := math.Abs(got - want[i]); e > 1e-3*math.Max(1, math.Abs(want[i])) {
			t.Fatalf("request %d: %.9g, want %.9g", i, got, want[i])
		}
	}
	// A third vector: the member that has not answered refuses the batch.
	g3 := make([]float64, len(c.grad))
	copy(g3, c.grad)
	g3[0] *= 2
	cts3, digests3 := product(g3)
	third := []DecryptRequest{NewInfluenceRequest(cm.inst.ID(), 1, "c00", digests3[0], GradientDigest(g3), cm.ids)}
	if _, _, err := serveBatch(t, cm, cm.ids[0], third, cts3[:1], nil); !errors.Is(err, ErrGradientMismatch) {
		t.Fatalf("a third vector in round 1: %v, want ErrGradientMismatch", err)
	}
}
