package aggregation

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"testing"
)

// Tests of edge aggregation (edge.go, issue 18): an edge sums some of the
// round's clients with no key and the coordinator adds its partial; members
// verify through it as they verify a flat round. Each attack is an edge
// deviating in one precise way against honest members.

// edgeRound encrypts n clients' updates; clients [0, direct) go straight
// into the coordinator's accumulator and the others through an edge's own
// accumulator, whose partial the coordinator adds. build may alter what
// the edge does: it gets the edge clients' ciphertexts and returns the
// partial's blocks and the clients it claims. The aggregate's source (for
// the members' evidence) is the clients' ciphertexts as the edge
// forwarded their c₁ (forwarded, default the true ones).
type edgeCase struct {
	numParams, n, direct int
	build                func(t *testing.T, cm *committee, cts map[string][][]byte, ids []string) ([][]byte, []string)
	forwarded            func(cts map[string][][]byte)
}

func edgeRound(t *testing.T, cm *committee, c edgeCase) (*Aggregate, []float64, map[string][][]byte) {
	t.Helper()
	enc, err := NewEncryptor(cm.params, cm.pk, 2)
	if err != nil {
		t.Fatal(err)
	}
	acc, err := NewAccumulator(cm.params, cm.inst.ID(), c.numParams)
	if err != nil {
		t.Fatal(err)
	}
	cts := map[string][][]byte{}
	var updates [][]float64
	var weights []float64
	var edgeIDs []string
	src := &testSource{cts: map[string][][]byte{}, weights: map[string]float64{}}
	for i := range c.n {
		id := fmt.Sprintf("c%02d", i)
		w := float64(1 + i)
		u := update(uint64(100+i), c.numParams)
		blocks, err := enc.EncryptUpdate(u, w)
		if err != nil {
			t.Fatal(err)
		}
		cts[id], src.weights[id] = blocks, w
		updates, weights = append(updates, u), append(weights, w)
		if i < c.direct {
			for _, ct := range blocks {
				if err := acc.Add(id, ct); err != nil {
					t.Fatal(err)
				}
			}
			continue
		}
		edgeIDs = append(edgeIDs, id)
	}
	build := c.build
	if build == nil {
		build = honestPartial
	}
	partial, claimed := build(t, cm, cts, edgeIDs)
	for _, ct := range partial {
		if err := acc.AddPartial(claimed, ct); err != nil {
			t.Fatal(err)
		}
	}
	for id, blocks := range cts {
		src.cts[id] = cloneAll(blocks)
	}
	if c.forwarded != nil {
		c.forwarded(src.cts)
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
	return agg, want, cts
}

// honestPartial is what an honest edge sends: the Finalize of its own
// accumulator over its clients.
func honestPartial(t *testing.T, cm *committee, cts map[string][][]byte, ids []string) ([][]byte, []string) {
	t.Helper()
	acc, err := NewAccumulator(cm.params, cm.inst.ID(), 40)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		for _, ct := range cts[id] {
			if err := acc.Add(id, ct); err != nil {
				t.Fatal(err)
			}
		}
	}
	agg, err := acc.Finalize()
	if err != nil {
		t.Fatal(err)
	}
	return agg.Ciphertexts, agg.Contributors
}

// bumpRow adds 1 (mod its prime) to the first coefficient of the given
// half of a client-form ciphertext, in place.
func bumpRow(p Parameters, ct []byte, c1 bool) {
	c0, c1rows := splitCiphertext(ct)
	row := c0
	if c1 {
		row = c1rows
	}
	q := p.ckks.Q()[0]
	v := binary.LittleEndian.Uint64(row) + 1
	if v >= q {
		v -= q
	}
	binary.LittleEndian.PutUint64(row, v)
}

func TestEdgePartialHonest(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	agg, want, _ := edgeRound(t, cm, edgeCase{numParams: 40, n: 6, direct: 2})
	if len(agg.Contributors) != 6 {
		t.Fatalf("contributors %v, want the 6 clients", agg.Contributors)
	}
	got, _, err := decrypt(t, cm, agg, 1, cm.ids[:2])
	if err != nil {
		t.Fatalf("members refused an honest edge's partial: %v", err)
	}
	if d := maxAbsDiff(got, want); d > 1e-6 {
		t.Fatalf("decrypted FedAvg through an edge differs from the plaintext one by %g", d)
	}
}

func TestAttackEdgeAlteredPartial(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	agg, _, _ := edgeRound(t, cm, edgeCase{numParams: 40, n: 6, direct: 2,
		build: func(t *testing.T, cm *committee, cts map[string][][]byte, ids []string) ([][]byte, []string) {
			partial, claimed := honestPartial(t, cm, cts, ids)
			bumpRow(cm.params, partial[0], true)
			return partial, claimed
		}})
	if _, _, err := decrypt(t, cm, agg, 1, cm.ids[:2]); !errors.Is(err, ErrNotASum) {
		t.Fatalf("err = %v, want ErrNotASum", err)
	}
}

func TestAttackEdgeClientLeftOutButCounted(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	agg, _, _ := edgeRound(t, cm, edgeCase{numParams: 40, n: 6, direct: 2,
		build: func(t *testing.T, cm *committee, cts map[string][][]byte, ids []string) ([][]byte, []string) {
			// Sums all but the last client and names them all.
			partial, _ := honestPartial(t, cm, cts, ids[:len(ids)-1])
			return partial, ids
		}})
	if len(agg.Contributors) != 6 {
		t.Fatalf("contributors %v: the left-out client should be counted", agg.Contributors)
	}
	if _, _, err := decrypt(t, cm, agg, 1, cm.ids[:2]); !errors.Is(err, ErrNotASum) {
		t.Fatalf("err = %v, want ErrNotASum", err)
	}
}

func TestAttackEdgePartialAndC1Altered(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	// The edge replaces c05's c₁ in its partial and in what it forwards,
	// consistently: the sum checks, the client's signature does not.
	agg, _, _ := edgeRound(t, cm, edgeCase{numParams: 40, n: 6, direct: 2,
		build: func(t *testing.T, cm *committee, cts map[string][][]byte, ids []string) ([][]byte, []string) {
			altered := map[string][][]byte{}
			for id, blocks := range cts {
				altered[id] = cloneAll(blocks)
			}
			bumpRow(cm.params, altered["c05"][0], true)
			return honestPartial(t, cm, altered, ids)
		},
		forwarded: func(cts map[string][][]byte) { bumpRow(params, cts["c05"][0], true) },
	})
	req := NewDecryptRequest(agg, "total", 1, cm.ids[:2])
	// The evidence must carry c05's statement over its true ciphertexts,
	// not the ones the edge forwarded.
	_, _, truth := edgeRoundTruth(t, cm, agg)
	err := cm.verifyRequest(t, cm.ids[0], req, agg.Ciphertexts, func(ev *Evidence) {
		ev.Submissions["c05"] = truth["c05"]
	})
	if !errors.Is(err, ErrNotASum) {
		t.Fatalf("err = %v, want ErrNotASum", err)
	}
}

// edgeRoundTruth re-signs each contributor's statement over the ciphertext
// the test source recorded before the edge's alteration: edgeRound draws
// deterministic updates but fresh encryptions, so the tests that need the
// true statement record it here from the clients' own bytes.
func edgeRoundTruth(t *testing.T, cm *committee, agg *Aggregate) (*Aggregate, []float64, map[string][]byte) {
	t.Helper()
	src := cm.sources[agg.Digests[0]]
	out := map[string][]byte{}
	for id, blocks := range src.cts {
		orig := cloneAll(blocks)
		if id == "c05" {
			// Undo the alteration to get the client's own ciphertext.
			unbump(cm.params, orig[0])
		}
		sub, err := NewSubmission(cm.params, cm.inst.Job(), id, 1, 0, uint64(src.weights[id]), orig, cm.clientKey(id))
		if err != nil {
			t.Fatal(err)
		}
		if out[id], err = sub.MarshalBinary(); err != nil {
			t.Fatal(err)
		}
	}
	return agg, nil, out
}

func unbump(p Parameters, ct []byte) {
	_, c1 := splitCiphertext(ct)
	q := p.ckks.Q()[0]
	v := binary.LittleEndian.Uint64(c1)
	if v == 0 {
		v = q
	}
	binary.LittleEndian.PutUint64(c1, v-1)
}

// The threat model's stated residue: an edge can shift c₀ of its partial.
// Members accept (they check c₁ only), and the shift lands in what the
// coordinator decrypts, the coordinator's own result.
func TestEdgeShiftsC0OfItsPartial(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	agg, want, _ := edgeRound(t, cm, edgeCase{numParams: 40, n: 6, direct: 2,
		build: func(t *testing.T, cm *committee, cts map[string][][]byte, ids []string) ([][]byte, []string) {
			partial, claimed := honestPartial(t, cm, cts, ids)
			// Add k = 2^36 to every entry of every c₀ row: rows are in the NTT
			// domain, so that adds the constant polynomial k·q_L (c₀ is
			// sent divided by the last prime) to the decrypted sum.
			c0, _ := splitCiphertext(partial[0])
			n := cm.params.ckks.N()
			for r := range cm.params.c0Rows() {
				q := cm.params.ckks.Q()[r]
				for i := range n {
					off := (r*n + i) * 8
					binary.LittleEndian.PutUint64(c0[off:], (binary.LittleEndian.Uint64(c0[off:])+1<<36)%q)
				}
			}
			return partial, claimed
		}})
	got, _, err := decrypt(t, cm, agg, 1, cm.ids[:2])
	if err != nil {
		t.Fatalf("members should accept a partial whose c0 alone was shifted (c0 is not checked): %v", err)
	}
	// An honest round decrypts within 1e-6 (TestEdgePartialHonest).
	if d := maxAbsDiff(got, want); d < 1e-4 || math.IsNaN(d) {
		t.Fatalf("a shifted c0 should shift the decrypted result, differs by only %g", d)
	}
}

func TestEdgeInfluenceProduct(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	c := realisticCase(41, 50, []float64{10, 20, 30}, false)
	// The coordinator's flat products, as a reference for the digests and
	// the decrypted values.
	cts, digests := influenceRun(t, cm, c)
	src := cm.sources[digests[0]]

	edgeProduct := func(t *testing.T, grad []float64, id string) []byte {
		t.Helper()
		inf, err := NewInfluence(params, cm.inst.ID(), grad, len(grad))
		if err != nil {
			t.Fatal(err)
		}
		for _, ct := range src.cts[id] {
			if err := inf.Add(id, ct); err != nil {
				t.Fatal(err)
			}
		}
		out, _, err := inf.Finalize(id)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	coordinator, err := NewInfluence(params, cm.inst.ID(), c.grad, len(c.grad))
	if err != nil {
		t.Fatal(err)
	}
	committed := GradientDigest(c.grad)

	t.Run("honest product taken as it is", func(t *testing.T) {
		if err := coordinator.AddProduct("c00", edgeProduct(t, c.grad, "c00")); err != nil {
			t.Fatal(err)
		}
		ct, d, err := coordinator.Finalize("c00")
		if err != nil {
			t.Fatal(err)
		}
		// Same c₁ as the coordinator's own product (c₀ differs by no
		// more than the lift, which must happen once: once at the edge).
		if !bytes.Equal(ct[len(ct)-params.C1Size():], cts[0][len(cts[0])-params.C1Size():]) {
			t.Fatal("the edge's product c1 differs from the coordinator's")
		}
		if !bytes.Equal(ct, cts[0]) {
			t.Fatal("the edge's product differs from the coordinator's (c0 lifted twice or not at all?)")
		}
		cm.register(d, src)
		req := NewInfluenceRequest(cm.inst.ID(), 1, "c00", d, committed, cm.ids)
		if _, err := decryptOrRefuse(t, cm, cm.ids[0], req, [][]byte{ct}, nil); err != nil {
			t.Fatalf("honest edge product refused: %v", err)
		}
	})
	t.Run("altered product", func(t *testing.T) {
		ct := edgeProduct(t, c.grad, "c01")
		// One c₁ coefficient moved.
		off := len(ct) - params.C1Size()
		q := params.ckks.Q()[0]
		binary.LittleEndian.PutUint64(ct[off:], (binary.LittleEndian.Uint64(ct[off:])+1)%q)
		if err := coordinator.AddProduct("c01", ct); err != nil {
			t.Fatal(err)
		}
		got, d, err := coordinator.Finalize("c01")
		if err != nil {
			t.Fatal(err)
		}
		cm.register(d, src)
		req := NewInfluenceRequest(cm.inst.ID(), 1, "c01", d, committed, cm.ids)
		if _, err := decryptOrRefuse(t, cm, cm.ids[1], req, [][]byte{got}, nil); !errors.Is(err, ErrProductMismatch) {
			t.Fatalf("err = %v, want ErrProductMismatch", err)
		}
	})
	t.Run("a second product for one client", func(t *testing.T) {
		if err := coordinator.AddProduct("c00", cts[0]); !errors.Is(err, ErrDuplicate) {
			t.Fatalf("err = %v, want ErrDuplicate", err)
		}
	})
}

func TestAccumulatorAddPartialRefuses(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	enc, err := NewEncryptor(params, cm.pk, 2)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := enc.EncryptUpdate(update(1, 40), 1)
	if err != nil {
		t.Fatal(err)
	}
	acc, err := NewAccumulator(params, cm.inst.ID(), 40)
	if err != nil {
		t.Fatal(err)
	}
	if err := acc.Add("a", ct[0]); err != nil {
		t.Fatal(err)
	}
	if err := acc.AddPartial([]string{"b", "a"}, ct[0]); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("a client already summed: err = %v, want ErrDuplicate", err)
	}
	if err := acc.AddPartial([]string{"b", "b"}, ct[0]); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("a client named twice: err = %v, want ErrDuplicate", err)
	}
	if err := acc.AddPartial(nil, ct[0]); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("no clients: err = %v, want ErrInvalidInput", err)
	}
	if err := acc.AddPartial([]string{"b", "c"}, ct[0][:100]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated: err = %v, want ErrMalformed", err)
	}
	if err := acc.AddPartial([]string{"b", "c"}, ct[0]); err != nil {
		t.Fatal(err)
	}
	if got := acc.Contributors(); len(got) != 3 {
		t.Fatalf("contributors %v, want a, b, c", got)
	}
}
