package aggregation

import (
	"crypto/rand"
	"testing"
)

// Fuzz targets for every decoder of data received from another party. Each
// asserts only that decoding never panics and that accepted input is
// consistent; `make fuzz` runs each for 60 s.

func FuzzUnmarshalCiphertext(f *testing.F) {
	params := testParams(f)
	cm := newCommittee(f, params, 2, 2)
	enc, _ := NewEncryptor(params, cm.pk, 1)
	ct, _ := enc.EncryptBlock(update(1, 10), 1, 0)
	f.Add(ct)
	f.Add(ct[:ciphertextHeaderSize])
	f.Add([]byte("TA"))
	acc, _ := NewAccumulator(params, cm.inst.ID(), 10)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, info, err := parseCiphertext(params, b)
		if err != nil {
			return
		}
		if c.Degree() != 1 || c.Level() != params.CKKS().MaxLevel() || info.block >= info.blocks {
			t.Fatalf("accepted a malformed ciphertext: degree %d level %d block %d/%d", c.Degree(), c.Level(), info.block, info.blocks)
		}
		_ = acc.Add("fuzz", b)
	})
}

func FuzzDecryptShare(f *testing.F) {
	params := testParams(f)
	cm := newCommittee(f, params, 3, 2)
	agg, _ := encryptedRound(f, cm, 10, []float64{1, 2, 3}, 1)
	req := NewDecryptRequest(agg, "total", 1, cm.ids[:2])
	raw, _ := req.MarshalBinary()
	f.Add(raw, 0, agg.Ciphertexts[0])
	f.Add(raw[:40], 1, agg.Ciphertexts[0][:60])
	m := cm.members[cm.ids[0]]
	f.Fuzz(func(t *testing.T, rawReq []byte, block int, ct []byte) {
		var r DecryptRequest
		if err := r.UnmarshalBinary(rawReq); err != nil {
			r = req
		}
		_, _ = m.admitDecryptShare(r, block, ct)
	})
}

func FuzzCombineShare(f *testing.F) {
	params := testParams(f)
	cm := newCommittee(f, params, 3, 2)
	agg, _ := encryptedRound(f, cm, 10, []float64{1, 2, 3}, 1)
	req := NewDecryptRequest(agg, "total", 1, cm.ids[:2])
	cm.verifyAll(f, req, agg.Ciphertexts)
	s0, err := cm.members[cm.ids[0]].admitDecryptShare(req, 0, agg.Ciphertexts[0])
	if err != nil {
		f.Fatal(err)
	}
	s1, err := cm.members[cm.ids[1]].admitDecryptShare(req, 0, agg.Ciphertexts[0])
	if err != nil {
		f.Fatal(err)
	}
	dec, _ := NewDecryptor(params, cm.inst)
	f.Add(s1)
	f.Add(s1[:baseHeaderSize])
	f.Fuzz(func(t *testing.T, share []byte) {
		_, _ = dec.CombineBlock(req, 0, agg.Ciphertexts[0], map[string][]byte{cm.ids[0]: s0, cm.ids[1]: share})
	})
}

func FuzzSealed(f *testing.F) {
	params := testParams(f)
	alice, _ := NewIdentity(rand.Reader)
	bob, _ := NewIdentity(rand.Reader)
	ctx := sealContext{instance: [32]byte{1}, sender: "a", recipient: "b"}
	sealed, _ := seal(alice, bob.PublicKey(), ctx, []byte("share"), rand.Reader)
	f.Add(sealed, alice.PublicKey())
	f.Add(sealed[:5], []byte{1, 2})
	f.Fuzz(func(t *testing.T, b, senderPub []byte) {
		plain, err := open(bob, senderPub, ctx, b)
		if err != nil {
			return
		}
		_, _ = unmarshalQP(params, kindShamirShare, 1, ctx.instance, plain)
	})
}

func FuzzThresholdShares(f *testing.F) {
	params := testParams(f)
	policy, _ := NewPolicy(PolicyConfig{})
	members, _ := newTestMembers(f, params, 2, policy)
	inst, _ := NewKeyGenInstance(params, Committee{Job: "j", Seed: []byte{1}, Threshold: 2, Members: infosOf(members)})
	commitments := map[string][]byte{}
	for _, m := range members {
		c, err := m.Commit(inst)
		if err != nil {
			f.Fatal(err)
		}
		commitments[m.ID()] = c
	}
	out1, _ := members[1].Reveal(inst, commitments)
	if _, err := members[0].Reveal(inst, commitments); err != nil {
		f.Fatal(err)
	}
	f.Add(out1.Sealed["m00"])
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		if members[0].ReceiveThresholdShares(inst, map[string][]byte{"m01": b}) == nil {
			// Only the genuine share can open; undo for the next input.
			members[0].mu.Lock()
			members[0].tsk = nil
			members[0].mu.Unlock()
		}
	})
}

func FuzzPublicKeyShare(f *testing.F) {
	params := testParams(f)
	cm := newCommittee(f, params, 2, 2)
	out, _ := cm.members[cm.ids[0]].Reveal(cm.inst, nil) // revealed already: the same messages
	f.Add(out.PublicKeyShare)
	f.Add(cm.pk)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = AggregatePublicKey(params, cm.inst, map[string][]byte{cm.ids[0]: out.PublicKeyShare, cm.ids[1]: b})
		_, _, _ = parsePublicKey(params, b)
	})
}

func FuzzDecryptRequest(f *testing.F) {
	agg := &Aggregate{Digests: [][32]byte{{1}}, Contributors: []string{"a", "b", "c"}}
	raw, _ := NewDecryptRequest(agg, "total", 3, []string{"m0", "m1"}).MarshalBinary()
	f.Add(raw)
	f.Fuzz(func(t *testing.T, b []byte) {
		var r DecryptRequest
		if err := r.UnmarshalBinary(b); err != nil {
			return
		}
		again, err := r.MarshalBinary()
		if err != nil || string(again) != string(b) {
			t.Fatalf("accepted request does not re-encode identically: %v", err)
		}
	})
}

func FuzzKeyGenInstance(f *testing.F) {
	params := testParams(f)
	policy, _ := NewPolicy(PolicyConfig{})
	ms, _ := newTestMembers(f, params, 2, policy)
	inst, _ := NewKeyGenInstance(params, Committee{Job: "j", Seed: []byte{1}, Threshold: 2, Members: infosOf(ms)})
	raw, _ := inst.MarshalBinary()
	f.Add(raw)
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = UnmarshalKeyGenInstance(params, data)
	})
}

func FuzzTranscript(f *testing.F) {
	tr := NewTranscript("j")
	e := NewTranscriptEntry("j", 0, tr.Head(), DecryptRequest{Round: 1, Purpose: "total", Digests: [][32]byte{{1}}, Contributors: []string{"a", "b", "c"}, Participants: []string{"m"}})
	e.Signatures = map[string][]byte{"m": make([]byte, 64)}
	tr.add(e)
	raw, _ := tr.MarshalBinary()
	f.Add(raw)
	eb, _ := e.MarshalBinary()
	f.Add(eb)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = UnmarshalTranscript(b)
		var e TranscriptEntry
		_ = e.UnmarshalBinary(b)
	})
}

// influenceFixture is a 3-member, threshold-2 committee with one client's
// influence ciphertext, its request and two genuine coefficient shares.
func influenceFixture(f *testing.F) (*committee, DecryptRequest, []byte, map[string][]byte) {
	params := testParams(f)
	cm := newCommittee(f, params, 3, 2)
	enc, _ := NewEncryptor(params, cm.pk, 1)
	inf, err := NewInfluence(params, cm.inst.ID(), update(3, 10), 10)
	if err != nil {
		f.Fatal(err)
	}
	blk, _ := enc.EncryptBlock(update(4, 10), 5, 0)
	if err := inf.Add("c", blk); err != nil {
		f.Fatal(err)
	}
	ct, d, err := inf.Finalize("c")
	if err != nil {
		f.Fatal(err)
	}
	cm.register(d, &testSource{cts: map[string][][]byte{"c": {blk}}, weights: map[string]float64{"c": 5}, grad: update(3, 10)})
	req := NewInfluenceRequest(cm.inst.ID(), 1, "c", d, cm.gradientDigest(d), cm.ids)
	cm.verifyAll(f, req, [][]byte{ct})
	shares := map[string][]byte{}
	for _, p := range cm.ids[:2] {
		if shares[p], err = cm.members[p].admitCoefficientShare(req, ct); err != nil {
			f.Fatal(err)
		}
	}
	return cm, req, ct, shares
}

func FuzzCoefficientShare(f *testing.F) {
	cm, req, ct, shares := influenceFixture(f)
	dec, _ := NewDecryptor(cm.params, cm.inst)
	f.Add(shares[cm.ids[1]])
	f.Add(shares[cm.ids[1]][:baseHeaderSize])
	f.Fuzz(func(t *testing.T, b []byte) {
		if s, err := parseCoefficientShare(cm.params, b); err == nil {
			if len(s.values) != cm.params.CKKS().MaxLevel()+1 {
				t.Fatalf("accepted a share with %d values", len(s.values))
			}
			if again := s.marshal(cm.params); string(again) != string(b) {
				t.Fatal("accepted share does not re-encode identically")
			}
		}
		_, _ = dec.CombineCoefficient(req, ct, map[string][]byte{cm.ids[0]: shares[cm.ids[0]], cm.ids[1]: b})
	})
}

func FuzzInfluenceCiphertext(f *testing.F) {
	cm, req, ct, _ := influenceFixture(f)
	dec, _ := NewDecryptor(cm.params, cm.inst)
	f.Add(ct)
	f.Add(ct[:influenceHeader])
	f.Fuzz(func(t *testing.T, b []byte) {
		c, info, err := parseInfluence(cm.params, b)
		if err != nil {
			return
		}
		if c.Degree() != 1 || info.blocks < 1 || info.logScale < minLogGradScale || info.logScale > maxLogGradScale {
			t.Fatalf("accepted a malformed influence ciphertext: %+v", info)
		}
		r := req
		r.Digests = [][32]byte{sha256Sum(b)}
		_, _ = dec.CombineCoefficient(r, b, nil)
	})
}
