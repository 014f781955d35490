package aggregation

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/tuneinsight/lattigo/v6/multiparty"
	"github.com/tuneinsight/lattigo/v6/schemes/ckks"
)

// Attack tests of authenticated key generation (issue 13, item 3): in each,
// the coordinator relaying the messages deviates in one way against honest
// members whose identity keys are pinned (pinnedKeys, as a manifest).

// commitAll has every member commit to inst and returns the commitments.
func commitAll(t *testing.T, inst *KeyGenInstance, ms []*Member) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, m := range ms {
		c, err := m.Commit(inst)
		if err != nil {
			t.Fatalf("%s: Commit: %v", m.ID(), err)
		}
		out[m.ID()] = c
	}
	return out
}

// (b) The coordinator hands m00 an instance in which m01's X25519 key is its
// own, so that m00 seals its Shamir share to the coordinator. Before the
// fix, m00 sealed it and the coordinator opened it.
func TestAttackX25519KeySubstituted(t *testing.T) {
	params := testParams(t)
	policy, _ := NewPolicy(PolicyConfig{})
	ms, _ := newTestMembers(t, params, 3, policy)
	genuine, err := NewKeyGenInstance(params, Committee{Job: "job", Seed: []byte("s"), Threshold: 2, Members: infosOf(ms)})
	if err != nil {
		t.Fatal(err)
	}
	attacker, _ := NewIdentity(rand.Reader)
	_, attackerSigner, _ := ed25519.GenerateKey(rand.Reader)
	infos := infosOf(ms)
	infos[1].PublicKey = attacker.PublicKey()
	forged, err := NewKeyGenInstance(params, Committee{Job: "job", Seed: []byte("s"), Threshold: 2, Members: infos})
	if err != nil {
		t.Fatal(err)
	}
	// m01 never signs a key that is not its own.
	if _, err := ms[1].Commit(forged); !errors.Is(err, ErrMemberKey) {
		t.Fatalf("m01 committed in an instance listing another X25519 key for it: err = %v, want ErrMemberKey", err)
	}
	victim := ms[0]
	own, err := victim.Commit(forged)
	if err != nil {
		t.Fatal(err)
	}
	honest := commitAll(t, genuine, ms[1:])

	// The coordinator signs m01's binding to its key with a key of its own.
	fake := Commitment{Instance: forged.ID(), Member: "m01", Share: [32]byte{1}}
	fake.X25519Signature = ed25519.Sign(attackerSigner, x25519Message("job", "m01", attacker.PublicKey()))
	fake.Signature = ed25519.Sign(attackerSigner, commitmentMessage(forged.ID(), "m01", fake.Share))
	fakeRaw, _ := fake.MarshalBinary()
	// Or it replays m01's genuine commitment (and X25519 signature), made
	// for the genuine instance.
	for _, tc := range []struct {
		name string
		m01  []byte
		want error
	}{
		{"signed-by-coordinator", fakeRaw, ErrMemberKey},
		{"replayed-from-genuine-instance", honest["m01"], ErrCommitment},
	} {
		t.Run(tc.name, func(t *testing.T) {
			commitments := map[string][]byte{"m00": own, "m01": tc.m01, "m02": honest["m02"]}
			out, err := victim.Reveal(forged, commitments)
			if !errors.Is(err, tc.want) || out != nil {
				t.Fatalf("Reveal: %d sealed shares, err = %v; want none and %v", len(sealedOf(out)), err, tc.want)
			}
			t.Logf("refused: %v", err)
		})
	}
	// The X25519 signature itself is what is checked: m01's genuine
	// signature, moved onto the forged instance's key, does not verify.
	var c Commitment
	_ = c.UnmarshalBinary(honest["m01"])
	if ed25519.Verify(ms[1].Info().SigningKey, x25519Message("job", "m01", attacker.PublicKey()), c.X25519Signature) {
		t.Fatal("m01's X25519 signature verifies for the coordinator's key")
	}
}

// (b') With the identity keys pinned, the coordinator cannot substitute a
// member's identity key and X25519 key together: the instance lists an
// identity key that is not the pinned one, and members refuse it at once.
func TestAttackIdentityKeySubstituted(t *testing.T) {
	params := testParams(t)
	policy, _ := NewPolicy(PolicyConfig{})
	ms, _ := newTestMembers(t, params, 3, policy)
	impostor := newTestMember(t, params, "m01", policy, nil)
	infos := infosOf(ms)
	infos[1] = impostor.Info()
	forged, err := NewKeyGenInstance(params, Committee{Job: "job", Seed: []byte("s"), Threshold: 2, Members: infos})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := ms[0].Commit(forged); !errors.Is(err, ErrMemberKey) || c != nil {
		t.Fatalf("Commit in an instance listing an impostor for m01: err = %v, want ErrMemberKey", err)
	} else {
		t.Logf("refused: %v", err)
	}
}

func sealedOf(out *KeyGenShares) map[string][]byte {
	if out == nil {
		return nil
	}
	return out.Sealed
}

// (c) A rogue public-key share chosen after seeing the others: the
// coordinator (or m02 colluding with it) waits for m00's and m01's shares
// and reveals for m02 its own share minus theirs, which makes the collective
// key one whose secret it alone holds. Before the fix, AggregatePublicKey
// accepted it. Now m02's share is bound by a commitment signed before any
// share was revealed; the rogue one does not match it.
func TestAttackRogueShareAfterSeeingOthers(t *testing.T) {
	params := testParams(t)
	policy, _ := NewPolicy(PolicyConfig{})
	ms, _ := newTestMembers(t, params, 3, policy)
	inst, err := NewKeyGenInstance(params, Committee{Job: "job", Seed: []byte("s"), Threshold: 2, Members: infosOf(ms)})
	if err != nil {
		t.Fatal(err)
	}
	commitments := commitAll(t, inst, ms)
	shares := map[string][]byte{}
	for _, m := range ms {
		out, err := m.Reveal(inst, commitments)
		if err != nil {
			t.Fatal(err)
		}
		shares[m.ID()] = out.PublicKeyShare
	}
	cp := params.ckks
	proto := multiparty.NewPublicKeyGenProtocol(cp)
	sk := ckks.NewKeyGenerator(cp).GenSecretKeyNew()
	own := proto.AllocateShare()
	proto.GenShare(sk, inst.crp(params, proto), &own)
	rogue := *own.Value.CopyNew()
	for _, id := range []string{"m00", "m01"} {
		p, err := unmarshalQP(params, kindPKShare, 1, inst.ID(), shares[id])
		if err != nil {
			t.Fatal(err)
		}
		cp.RingQP().Sub(rogue, p[0], rogue)
	}
	forged := map[string][]byte{"m00": shares["m00"], "m01": shares["m01"], "m02": marshalQP(params, kindPKShare, inst.ID(), rogue)}
	// Without the commitments the rogue share would make the coordinator's
	// own key (this is what the check below stops).
	if pk, err := AggregatePublicKey(params, inst, forged); err == nil {
		p, _, _ := parsePublicKey(params, pk)
		if !bytes.Equal(marshalQP(params, kindPKShare, inst.ID(), p.Value[0]), marshalQP(params, kindPKShare, inst.ID(), own.Value)) {
			t.Fatal("the rogue share does not make the coordinator's key: the test is wrong")
		}
	}
	for _, m := range ms[:2] {
		pk, sig, err := m.CertifyPublicKey(inst, forged)
		if !errors.Is(err, ErrCommitment) || pk != nil || sig != nil {
			t.Fatalf("%s: CertifyPublicKey with a rogue share: err = %v, signed %t; want ErrCommitment and no signature", m.ID(), err, sig != nil)
		}
		t.Logf("%s refused: %v", m.ID(), err)
	}
	// The coordinator's own check of a reveal refuses it too.
	if err := inst.CheckRevealedShare("m02", commitments["m02"], forged["m02"]); !errors.Is(err, ErrCommitment) {
		t.Fatalf("CheckRevealedShare(rogue) = %v, want ErrCommitment", err)
	}
	if err := inst.CheckRevealedShare("m02", commitments["m02"], shares["m02"]); err != nil {
		t.Fatalf("CheckRevealedShare(genuine) = %v", err)
	}
	// The honest shares still certify.
	if _, _, err := ms[0].CertifyPublicKey(inst, shares); err != nil {
		t.Fatal(err)
	}
}

// (c') The coordinator cannot get a member to reveal early, nor commit on a
// member's behalf to a share it chose.
func TestAttackRevealWithoutCommitments(t *testing.T) {
	params := testParams(t)
	policy, _ := NewPolicy(PolicyConfig{})
	ms, _ := newTestMembers(t, params, 3, policy)
	inst, err := NewKeyGenInstance(params, Committee{Job: "job", Seed: []byte("s"), Threshold: 2, Members: infosOf(ms)})
	if err != nil {
		t.Fatal(err)
	}
	commitments := commitAll(t, inst, ms)
	var m02 Commitment
	_ = m02.UnmarshalBinary(commitments["m02"])
	// A commitment of the coordinator's choosing for m02, with m02's
	// genuine X25519 signature copied over: the commitment signature fails.
	chosen := m02
	chosen.Share = shareDigest(inst.ID(), "m02", []byte("a share the coordinator chose"))
	chosenRaw, _ := chosen.MarshalBinary()
	// m00's own commitment replaced (the coordinator would then reveal
	// another share as m00's).
	var m00 Commitment
	_ = m00.UnmarshalBinary(commitments["m00"])
	m00.Share[0] ^= 1
	m00Raw, _ := m00.MarshalBinary()
	for _, tc := range []struct {
		name string
		mod  func(map[string][]byte)
	}{
		{"one-missing", func(c map[string][]byte) { delete(c, "m02") }},
		{"none", func(c map[string][]byte) { clear(c) }},
		{"chosen-by-coordinator", func(c map[string][]byte) { c["m02"] = chosenRaw }},
		{"own-replaced", func(c map[string][]byte) { c["m00"] = m00Raw }},
		{"moved-to-another-member", func(c map[string][]byte) { c["m02"] = c["m01"] }},
		{"garbage", func(c map[string][]byte) { c["m02"] = []byte{1, 2, 3} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := map[string][]byte{}
			for k, v := range commitments {
				c[k] = v
			}
			tc.mod(c)
			out, err := ms[0].Reveal(inst, c)
			if !errors.Is(err, ErrCommitment) || out != nil {
				t.Fatalf("Reveal: %d sealed shares, err = %v; want none and ErrCommitment", len(sealedOf(out)), err)
			}
			t.Logf("refused: %v", err)
		})
	}
	if _, err := ms[0].Reveal(inst, commitments); err != nil {
		t.Fatalf("the genuine commitments: %v", err)
	}
}

// (a) A public key is usable only with a valid signature of every
// committee member over exactly that key.
func TestVerifyPublicKey(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	if _, err := VerifyPublicKey(params, cm.pk, cm.cert, cm.keys); err != nil {
		t.Fatalf("genuine key: %v", err)
	}
	if _, err := VerifyPublicKey(params, cm.pk, cm.cert, nil); err != nil {
		t.Fatalf("genuine key, unpinned: %v", err)
	}
	cert, err := UnmarshalKeyCertificate(params, cm.cert)
	if err != nil {
		t.Fatal(err)
	}
	reencode := func(mod func(*KeyCertificate)) []byte {
		c := &KeyCertificate{Instance: cert.Instance, Signatures: map[string][]byte{}}
		for k, v := range cert.Signatures {
			c.Signatures[k] = v
		}
		mod(c)
		b, err := c.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if again := reencode(func(*KeyCertificate) {}); !bytes.Equal(again, cm.cert) {
		t.Fatal("a key certificate does not round-trip")
	}
	// A committee the coordinator made up, whose key it signs itself: the
	// pinned keys do not know its members.
	other := newCommittee(t, params, 3, 2)
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	forgedSig := ed25519.Sign(stranger, keyMessage("job", cm.inst.ID(), sha256.Sum256(cm.pk)))
	for _, tc := range []struct {
		name     string
		pk, cert []byte
		want     error
	}{
		{"c-1-signatures", cm.pk, reencode(func(c *KeyCertificate) { delete(c.Signatures, "m02") }), ErrUnsignedKey},
		{"no-signatures", cm.pk, reencode(func(c *KeyCertificate) { clear(c.Signatures) }), ErrUnsignedKey},
		{"one-signed-by-another-key", cm.pk, reencode(func(c *KeyCertificate) { c.Signatures["m01"] = forgedSig }), ErrUnsignedKey},
		{"one-signature-twice", cm.pk, reencode(func(c *KeyCertificate) { c.Signatures["m01"] = c.Signatures["m00"] }), ErrUnsignedKey},
		{"another-key-same-certificate", other.pk, cm.cert, ErrUnsignedKey},
		{"coordinator-committee", other.pk, other.cert, ErrMemberKey},
		{"no-certificate", cm.pk, nil, ErrUnsignedKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := VerifyPublicKey(params, tc.pk, tc.cert, cm.keys)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// Every key-generation message round-trips (docs/STYLE.md §5).
func TestCommitmentRoundTrip(t *testing.T) {
	params := testParams(t)
	policy, _ := NewPolicy(PolicyConfig{})
	ms, keys := newTestMembers(t, params, 2, policy)
	inst, err := NewKeyGenInstance(params, Committee{Job: "job", Seed: []byte("s"), Threshold: 2, Members: infosOf(ms)})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := ms[0].Commit(inst)
	if err != nil {
		t.Fatal(err)
	}
	c, err := inst.VerifyCommitment(keys, "m00", raw)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := c.MarshalBinary()
	if !bytes.Equal(again, raw) {
		t.Fatal("a commitment does not round-trip")
	}
	if err := c.UnmarshalBinary(raw[:len(raw)-1]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated commitment: %v", err)
	}
}
