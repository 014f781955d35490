package aggregation

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"
)

func TestSealed(t *testing.T) {
	alice, _ := NewIdentity(rand.Reader)
	bob, _ := NewIdentity(rand.Reader)
	eve, _ := NewIdentity(rand.Reader)
	ctx := sealContext{instance: [32]byte{1}, sender: "alice", recipient: "bob"}
	msg := []byte("threshold share")
	sealed, err := seal(alice, bob.PublicKey(), ctx, msg, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	got, err := open(bob, alice.PublicKey(), ctx, sealed)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("open = %q, %v", got, err)
	}
	if bytes.Contains(sealed, msg) {
		t.Fatal("plaintext visible in the sealed message")
	}
	tampered := bytes.Clone(sealed)
	tampered[len(tampered)-20] ^= 1
	otherInstance := ctx
	otherInstance.instance[0] = 2
	swapped := sealContext{instance: ctx.instance, sender: "bob", recipient: "alice"}
	renamed := ctx
	renamed.recipient = "carol"
	for _, tc := range []struct {
		name   string
		to     *Identity
		from   []byte
		ctx    sealContext
		sealed []byte
	}{
		{"tampered", bob, alice.PublicKey(), ctx, tampered},
		{"wrong-recipient", eve, alice.PublicKey(), ctx, sealed},
		{"claimed-other-sender", bob, eve.PublicKey(), ctx, sealed},
		{"other-instance", bob, alice.PublicKey(), otherInstance, sealed},
		{"swapped-sender-recipient", alice, bob.PublicKey(), swapped, sealed},
		{"other-recipient-name", bob, alice.PublicKey(), renamed, sealed},
		{"truncated", bob, alice.PublicKey(), ctx, sealed[:10]},
		{"bad-version", bob, alice.PublicKey(), ctx, append([]byte{9}, sealed[1:]...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := open(tc.to, tc.from, tc.ctx, tc.sealed); !errors.Is(err, ErrSealed) {
				t.Fatalf("err = %v, want ErrSealed", err)
			}
		})
	}
	// Identities round-trip.
	again, err := IdentityFromBytes(alice.Bytes())
	if err != nil || !bytes.Equal(again.PublicKey(), alice.PublicKey()) {
		t.Fatalf("identity round trip: %v", err)
	}
}

// The coordinator relaying sealed threshold shares cannot swap them
// between recipients or corrupt them unnoticed.
func TestKeyGenRejectsSwappedShares(t *testing.T) {
	params := testParams(t)
	policy, _ := NewPolicy(PolicyConfig{})
	members, _ := newTestMembers(t, params, 3, policy)
	inst, err := NewKeyGenInstance(params, Committee{Job: "j", Seed: []byte{1}, Threshold: 2, Members: infosOf(members)})
	if err != nil {
		t.Fatal(err)
	}
	commitments := map[string][]byte{}
	for _, m := range members {
		if commitments[m.ID()], err = m.Commit(inst); err != nil {
			t.Fatal(err)
		}
	}
	again, _ := members[0].Commit(inst)
	if !bytes.Equal(again, commitments["m00"]) {
		t.Fatal("a repeated Commit drew a new secret")
	}
	outs := make([]*KeyGenShares, 3)
	for i, m := range members {
		if outs[i], err = m.Reveal(inst, commitments); err != nil {
			t.Fatal(err)
		}
	}
	revealed, _ := members[0].Reveal(inst, commitments)
	if !bytes.Equal(revealed.PublicKeyShare, outs[0].PublicKeyShare) || !bytes.Equal(revealed.Sealed["m01"], outs[0].Sealed["m01"]) {
		t.Fatal("a repeated Reveal sealed new shares")
	}
	// m00 should receive from m01 and m02; the relay hands it the shares
	// m01 sealed for m02 instead.
	swapped := map[string][]byte{"m01": outs[1].Sealed["m02"], "m02": outs[2].Sealed["m00"]}
	if err := members[0].ReceiveThresholdShares(inst, swapped); !errors.Is(err, ErrSealed) {
		t.Fatalf("swapped share: err = %v, want ErrSealed", err)
	}
	// A share attributed to the wrong sender fails too.
	crossed := map[string][]byte{"m01": outs[2].Sealed["m00"], "m02": outs[1].Sealed["m00"]}
	if err := members[0].ReceiveThresholdShares(inst, crossed); !errors.Is(err, ErrSealed) {
		t.Fatalf("crossed senders: err = %v, want ErrSealed", err)
	}
	if err := members[0].ReceiveThresholdShares(inst, map[string][]byte{"m01": outs[1].Sealed["m00"]}); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("missing share: err = %v, want ErrIncomplete", err)
	}
	good := map[string][]byte{"m01": outs[1].Sealed["m00"], "m02": outs[2].Sealed["m00"]}
	if err := members[0].ReceiveThresholdShares(inst, good); err != nil {
		t.Fatal(err)
	}
	if !members[0].Ready(inst.ID()) {
		t.Fatal("member not ready after its shares")
	}
	// The public key needs every member's share.
	if _, err := AggregatePublicKey(params, inst, map[string][]byte{"m00": outs[0].PublicKeyShare, "m01": outs[1].PublicKeyShare}); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("2 of 3 public-key shares: err = %v", err)
	}
}

func TestKeyGenInstance(t *testing.T) {
	params := testParams(t)
	a, _ := NewIdentity(rand.Reader)
	b, _ := NewIdentity(rand.Reader)
	ka, _, _ := ed25519.GenerateKey(rand.Reader)
	kb, _, _ := ed25519.GenerateKey(rand.Reader)
	c := Committee{Job: "job", Seed: []byte("s"), Epoch: 2, Threshold: 2, Members: []MemberInfo{{"b", b.PublicKey(), kb}, {"a", a.PublicKey(), ka}}}
	inst, err := NewKeyGenInstance(params, c)
	if err != nil {
		t.Fatal(err)
	}
	// Order of members does not matter; content does.
	c2 := c
	c2.Members = []MemberInfo{c.Members[1], c.Members[0]}
	inst2, _ := NewKeyGenInstance(params, c2)
	if inst.ID() != inst2.ID() {
		t.Fatal("member order changed the instance ID")
	}
	c3 := c
	c3.Epoch = 3
	inst3, _ := NewKeyGenInstance(params, c3)
	if inst.ID() == inst3.ID() {
		t.Fatal("a new epoch kept the instance ID")
	}
	raw, _ := inst.MarshalBinary()
	back, err := UnmarshalKeyGenInstance(params, raw)
	if err != nil || back.ID() != inst.ID() || back.Epoch() != 2 || back.Threshold() != 2 || back.Members()[0].ID != "a" {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := UnmarshalKeyGenInstance(params, raw[:len(raw)-1]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Committee)
	}{
		{"threshold-1", func(c *Committee) { c.Threshold = 1 }},
		{"threshold-above-c", func(c *Committee) { c.Threshold = 3 }},
		{"duplicate-id", func(c *Committee) { c.Members = []MemberInfo{{"a", a.PublicKey(), ka}, {"a", b.PublicKey(), kb}} }},
		{"shared-key", func(c *Committee) { c.Members = []MemberInfo{{"a", a.PublicKey(), ka}, {"b", a.PublicKey(), kb}} }},
		{"bad-key", func(c *Committee) { c.Members = []MemberInfo{{"a", a.PublicKey(), ka}, {"b", []byte{1}, kb}} }},
		{"shared-identity-key", func(c *Committee) { c.Members = []MemberInfo{{"a", a.PublicKey(), ka}, {"b", b.PublicKey(), ka}} }},
		{"no-identity-key", func(c *Committee) { c.Members = []MemberInfo{{"a", a.PublicKey(), ka}, {"b", b.PublicKey(), nil}} }},
		{"no-seed", func(c *Committee) { c.Seed = nil }},
		{"no-job", func(c *Committee) { c.Job = "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := c
			tc.mod(&bad)
			if _, err := NewKeyGenInstance(params, bad); !errors.Is(err, ErrInvalidInput) {
				t.Fatalf("err = %v, want ErrInvalidInput", err)
			}
		})
	}
}

func TestMarshalRoundTrips(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	enc, err := NewEncryptor(params, cm.pk, 1)
	if err != nil {
		t.Fatal(err)
	}
	if enc.KeyID() != cm.inst.ID() {
		t.Fatal("public key bound to another instance")
	}
	if id, err := PublicKeyInstance(params, cm.pk); err != nil || id != cm.inst.ID() {
		t.Fatalf("PublicKeyInstance: %v", err)
	}
	ct, err := enc.EncryptBlock(update(1, 10), 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ct) != params.CiphertextSize() {
		t.Fatalf("ciphertext of %d bytes, want %d", len(ct), params.CiphertextSize())
	}
	c, info, err := parseCiphertext(params, ct)
	if err != nil || info.block != 0 || info.blocks != 1 {
		t.Fatalf("parse: %v %+v", err, info)
	}
	if again := marshalCiphertext(params, info.key, 0, 1, c, nil); !bytes.Equal(again, ct) {
		t.Fatal("ciphertext does not round-trip")
	}
	pk, key, err := parsePublicKey(params, cm.pk)
	if err != nil {
		t.Fatal(err)
	}
	if again := marshalQP(params, kindPublicKey, key, pk.Value[0], pk.Value[1]); !bytes.Equal(again, cm.pk) {
		t.Fatal("public key does not round-trip")
	}
	agg := &Aggregate{Key: cm.inst.ID(), Digests: [][32]byte{{1}, {2}}, Contributors: []string{"z", "a", "b"}}
	req := NewDecryptRequest(agg, "group/1", 7, []string{"m01", "m00"})
	raw, err := req.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var back DecryptRequest
	if err := back.UnmarshalBinary(raw); err != nil {
		t.Fatal(err)
	}
	if back.ID() != req.ID() || back.Round != 7 || back.Contributors[0] != "a" || back.Participants[0] != "m00" {
		t.Fatalf("request round trip: %+v", back)
	}
	unsorted := req
	unsorted.Contributors = []string{"b", "a"}
	if _, err := unsorted.MarshalBinary(); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("unsorted contributors accepted: %v", err)
	}
	if err := back.UnmarshalBinary(raw[:len(raw)-2]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated request: %v", err)
	}
}

func TestParseCiphertextRejects(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 2, 2)
	enc, _ := NewEncryptor(params, cm.pk, 1)
	ct, _ := enc.EncryptBlock(update(1, 10), 1, 0)
	other := DefaultConfig()
	other.LogN = 10
	other.Insecure = true
	other.LogNoiseFlooding = 31
	otherParams, _ := NewParameters(other)
	mutate := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(ct)) }
	for _, tc := range []struct {
		name   string
		params Parameters
		b      []byte
		want   error
	}{
		{"empty", params, nil, ErrMalformed},
		{"magic", params, mutate(func(b []byte) []byte { b[0] = 'X'; return b }), ErrMalformed},
		{"kind", params, mutate(func(b []byte) []byte { b[2] = byte(kindPublicKey); return b }), ErrMalformed},
		{"version", params, mutate(func(b []byte) []byte { b[3] = 9; return b }), ErrMalformed},
		{"params", otherParams, ct, ErrParametersMismatch},
		{"level", params, mutate(func(b []byte) []byte { b[5] = 0; return b }), ErrMalformed},
		{"degree", params, mutate(func(b []byte) []byte { b[7] = 3; return b }), ErrMalformed},
		{"short", params, ct[:len(ct)-8], ErrMalformed},
		{"long", params, append(bytes.Clone(ct), 0), ErrMalformed},
		{"block-beyond-count", params, mutate(func(b []byte) []byte { b[baseHeaderSize+3] = 5; return b }), ErrBlockMismatch},
		{"unreduced", params, mutate(func(b []byte) []byte {
			for i := len(b) - 8; i < len(b); i++ {
				b[i] = 0xff
			}
			return b
		}), ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := parseCiphertext(tc.params, tc.b); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestAccumulator(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 2, 2)
	enc, _ := NewEncryptor(params, cm.pk, 2)
	n := params.Slots() + 5 // two blocks
	cts, err := enc.EncryptUpdate(update(1, n), 3)
	if err != nil {
		t.Fatal(err)
	}
	acc, err := NewAccumulator(params, cm.inst.ID(), n)
	if err != nil {
		t.Fatal(err)
	}
	if acc.Blocks() != 2 || len(cts) != 2 {
		t.Fatalf("%d blocks, %d ciphertexts, want 2", acc.Blocks(), len(cts))
	}
	if err := acc.Add("a", cts[0]); err != nil {
		t.Fatal(err)
	}
	if err := acc.Add("a", cts[0]); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("duplicate: %v", err)
	}
	if _, err := acc.Finalize(); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("finalize with a partial client: %v", err)
	}
	if got := acc.Incomplete(); len(got) != 1 || got[0] != "a" {
		t.Fatalf("Incomplete = %v", got)
	}
	if acc.Complete("a") || acc.Complete("nobody") {
		t.Fatalf("Complete(a) = %v with one of two blocks, Complete(nobody) = %v", acc.Complete("a"), acc.Complete("nobody"))
	}
	short, _ := enc.EncryptUpdate(update(1, 5), 3) // one block of a 1-block update
	if err := acc.Add("b", short[0]); !errors.Is(err, ErrBlockMismatch) {
		t.Fatalf("wrong block count: %v", err)
	}
	otherAcc, _ := NewAccumulator(params, [32]byte{9}, n)
	if err := otherAcc.Add("a", cts[0]); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("wrong key: %v", err)
	}
	if err := acc.Add("a", cts[1]); err != nil {
		t.Fatal(err)
	}
	if !acc.Complete("a") {
		t.Fatal("Complete(a) = false after both blocks")
	}
	agg, err := acc.Finalize()
	if err != nil {
		t.Fatal(err)
	}
	if len(agg.Contributors) != 1 || len(agg.Digests) != 2 || agg.Digests[0] != sha256Sum(agg.Ciphertexts[0]) {
		t.Fatalf("aggregate: %+v", agg.Contributors)
	}
	// One contribution: the sum is that ciphertext itself.
	if !bytes.Equal(agg.Ciphertexts[0], cts[0]) {
		t.Fatal("sum of one ciphertext differs from it")
	}
	if err := acc.Add("c", cts[0]); !errors.Is(err, ErrState) {
		t.Fatalf("add after finalize: %v", err)
	}
	empty, _ := NewAccumulator(params, cm.inst.ID(), n)
	if _, err := empty.Finalize(); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("empty finalize: %v", err)
	}
}

func TestEncryptorRejects(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 2, 2)
	enc, _ := NewEncryptor(params, cm.pk, 1)
	for _, tc := range []struct {
		name   string
		delta  []float64
		weight float64
	}{
		{"empty", nil, 1},
		{"zero-weight", []float64{1}, 0},
		{"negative-weight", []float64{1}, -1},
		{"nan-weight", []float64{1}, nan()},
		{"nan-value", []float64{1, nan()}, 1},
		{"huge-value", []float64{1, 1e300}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := enc.EncryptUpdate(tc.delta, tc.weight); !errors.Is(err, ErrInvalidInput) {
				t.Fatalf("err = %v, want ErrInvalidInput", err)
			}
		})
	}
	if _, err := enc.EncryptBlock([]float64{1}, 1, 1); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("block beyond count: %v", err)
	}
	if _, err := NewEncryptor(params, cm.pk[:100], 1); !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated public key: %v", err)
	}
}

// Encryption of the same update by the parallel and single-block paths
// decrypts to the same values: block boundaries and the weight slot are
// where the tests expect them.
func TestEncryptBlockLayout(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 2, 2)
	enc, _ := NewEncryptor(params, cm.pk, 3)
	policy, _ := NewPolicy(PolicyConfig{MinContributors: 2})
	for _, m := range cm.members {
		m.policy = policy
	}
	n := params.Slots() - 1 // the weight lands in the last slot of block 0
	acc, _ := NewAccumulator(params, cm.inst.ID(), n)
	u := update(3, n)
	for i, c := range []string{"a", "b"} {
		ct, err := enc.EncryptBlock(u, float64(i+1), 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := cm.add(acc, c, [][]byte{ct}, float64(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	agg, err := acc.Finalize()
	if err != nil {
		t.Fatal(err)
	}
	got, weight, err := decrypt(t, cm, agg, 1, cm.ids)
	if err != nil {
		t.Fatal(err)
	}
	if d := maxAbsDiff(got, u); d > precisionBound || weight < 3-1e-6 || weight > 3+1e-6 {
		t.Fatalf("error %g, weight %v", d, weight)
	}
}

// Concurrent streams add into the same sums; the result equals the
// sequential sum (run under -race).
func TestAccumulatorConcurrent(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 2, 2)
	enc, _ := NewEncryptor(params, cm.pk, 2)
	n := 2*params.Slots() + 1
	var all [][][]byte
	for c := 0; c < 4; c++ {
		cts, err := enc.EncryptUpdate(update(uint64(c), n), 1)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, cts)
	}
	seq, _ := NewAccumulator(params, cm.inst.ID(), n)
	par, _ := NewAccumulator(params, cm.inst.ID(), n)
	done := make(chan error, len(all))
	for c, cts := range all {
		for _, ct := range cts {
			if err := seq.Add(memberID(c), ct); err != nil {
				t.Fatal(err)
			}
		}
		go func() {
			for _, ct := range cts {
				if err := par.Add(memberID(c), ct); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range all {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	a, err := seq.Finalize()
	if err != nil {
		t.Fatal(err)
	}
	b, err := par.Finalize()
	if err != nil {
		t.Fatal(err)
	}
	for i := range a.Digests {
		if a.Digests[i] != b.Digests[i] {
			t.Fatalf("block %d: concurrent sum differs from sequential sum", i)
		}
	}
}
