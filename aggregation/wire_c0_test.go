package aggregation

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/tuneinsight/lattigo/v6/schemes/ckks"
)

// TestCiphertextWireSize pins the ciphertext's wire form for the default
// set: c₁ over the three Q primes and c₀ rounded to a multiple of the last
// one, sent over the other two (encrypt.go), five rows of N words instead
// of six.
func TestCiphertextWireSize(t *testing.T) {
	p := DefaultParameters()
	n := p.CKKS().N()
	if want := ciphertextHeaderSize + 5*n*8; p.CiphertextSize() != want {
		t.Fatalf("default ciphertext of %d bytes (%.2f per slot), want %d (c₀ over 2 primes, c₁ over 3: %.2f per slot)",
			p.CiphertextSize(), float64(p.CiphertextSize())/float64(n), want, float64(want)/float64(n))
	}
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	enc, err := NewEncryptor(params, cm.pk, 1)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := enc.EncryptBlock(update(3, 100), 7, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := ciphertextHeaderSize + 5*params.CKKS().N()*8; len(ct) != want {
		t.Fatalf("test-set ciphertext of %d bytes, want %d", len(ct), want)
	}
}

// TestCiphertextOldVersionRefused: a ciphertext in the version-1 layout
// (c₀ whole, as tally wrote it before c₀ was rounded), from a client or a
// state file, is refused by its version, not misread as the new layout.
func TestCiphertextOldVersionRefused(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	enc, err := NewEncryptor(params, cm.pk, 1)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := enc.EncryptBlock(update(3, 100), 7, 0)
	if err != nil {
		t.Fatal(err)
	}
	old := append([]byte(nil), ct...)
	old[3] = 1
	acc, err := NewAccumulator(params, cm.inst.ID(), 100)
	if err != nil {
		t.Fatal(err)
	}
	err = acc.Add("c00", old)
	if err == nil || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "version 1") {
		t.Fatalf("version-1 ciphertext: got %v, want a malformed-message error naming version 1", err)
	}
	t.Logf("refused: %v", err)
}

// TestC0Rounding measures what rounding c₀ costs: the noise of a
// decrypted (with the secret key) aggregate of 8 wire-form ciphertexts
// matches √(8·fresh + C0RoundingSigma(8)²), and the decrypted average is
// as precise as the plaintext FedAvg requires. A parameter set whose
// flooding is too small to cover the rounding sends c₀ whole (its scale
// 2^59 sits below the last prime, so a rounded c₀ would bury the message:
// the case the budget exists for) and still decrypts exactly.
func TestC0Rounding(t *testing.T) {
	t.Run("noise", func(t *testing.T) {
		p := testParams(t)
		if !p.C0Rounded() {
			t.Fatal("the test set does not round c₀")
		}
		const c, thr, clients = 5, 3, 8
		cm := newCommittee(t, p, c, thr)
		s := collectiveSecret(t, cm)
		enc, err := NewEncryptor(p, cm.pk, 1)
		if err != nil {
			t.Fatal(err)
		}
		numParams := p.Slots() - 1
		acc, err := NewAccumulator(p, cm.inst.ID(), numParams)
		if err != nil {
			t.Fatal(err)
		}
		cp := p.CKKS()
		ecd := ckks.NewEncoder(cp, uint(p.cfg.EncoderPrecision))
		rq := cp.RingQ()
		sumPt := rq.NewPoly()
		vals := make([]float64, p.Slots())
		for i := range clients {
			u := update(uint64(60+i), numParams)
			w := float64(3 * (i + 1))
			cts, err := enc.EncryptUpdate(u, w)
			if err != nil {
				t.Fatal(err)
			}
			if err := acc.Add(fmt.Sprintf("c%02d", i), cts[0]); err != nil {
				t.Fatal(err)
			}
			fill(vals, u, w, 0)
			pt := ckks.NewPlaintext(cp, cp.MaxLevel())
			if err := encode(p, ecd, vals, pt); err != nil {
				t.Fatal(err)
			}
			rq.Add(sumPt, pt.Value, sumPt)
		}
		agg, err := acc.Finalize()
		if err != nil {
			t.Fatal(err)
		}
		act, _, err := parseCiphertext(p, agg.Ciphertexts[0])
		if err != nil {
			t.Fatal(err)
		}
		rms, _ := noiseStats(p, act, s, sumPt)
		model := math.Sqrt(clients*p.FreshNoiseVariance(c) + math.Pow(p.C0RoundingSigma(clients), 2))
		t.Logf("aggregate of %d rounded ciphertexts: noise rms 2^%.2f, model 2^%.2f (rounding 2^%.2f, fresh 2^%.2f); flooding per share 2^%.2f",
			clients, math.Log2(rms), math.Log2(model), math.Log2(p.C0RoundingSigma(clients)),
			0.5*math.Log2(clients*p.FreshNoiseVariance(c)), math.Log2(p.NoiseFloodingSigma()))
		if rms > 1.1*model || rms < 0.9*model {
			t.Errorf("noise rms 2^%.3f, model 2^%.3f: ratio %.3f outside [0.9, 1.1]", math.Log2(rms), math.Log2(model), rms/model)
		}
		if 4*p.C0RoundingSigma(p.cfg.Flooding.Contributors) > p.NoiseFloodingSigma() {
			t.Errorf("rounding of %d contributors 2^%.2f above a quarter of the flooding σ 2^%.2f", p.cfg.Flooding.Contributors,
				math.Log2(p.C0RoundingSigma(p.cfg.Flooding.Contributors)), math.Log2(p.NoiseFloodingSigma()))
		}
	})
	t.Run("over budget: c0 whole", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.LogN, cfg.Insecure = 10, true
		cfg.LogQ, cfg.LogDefaultScale = []int{60, 60}, 59
		cfg.Flooding = FloodingConfig{Security: 16, Decryptions: 4, Scalars: 1, Contributors: 8, Blocks: 1, Committee: 3}
		p, err := NewParameters(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("flooding σ 2^%.2f, rounding of %d contributors would be 2^%.2f", math.Log2(p.NoiseFloodingSigma()), cfg.Flooding.Contributors, math.Log2(p.c0Rounding(cfg.Flooding.Contributors)))
		if p.C0Rounded() {
			t.Fatalf("c₀ rounded by a 60-bit prime at scale 2^59 with flooding σ 2^%.1f", math.Log2(p.NoiseFloodingSigma()))
		}
		if want := ciphertextHeaderSize + 4*p.CKKS().N()*8; p.CiphertextSize() != want {
			t.Fatalf("ciphertext of %d bytes, want %d (c₀ whole)", p.CiphertextSize(), want)
		}
		cm := newCommittee(t, p, 3, 2)
		agg, want := encryptedRound(t, cm, 300, []float64{5, 9, 2}, 4)
		got, _, err := decrypt(t, cm, agg, 1, cm.ids[:2])
		if err != nil {
			t.Fatal(err)
		}
		if e := maxAbsDiff(got, want); e > 1e-4 {
			t.Errorf("max error %g of the average, want ≤ 1e-4", e)
		}
	})
}

// TestDecryptShareWireSize pins the whole share's wire form for the
// default set: divided by the last prime, which the combiner drops
// before decoding (scale 2^104 over a 60-bit prime leaves 2^44), so two
// rows of N words instead of three.
func TestDecryptShareWireSize(t *testing.T) {
	p := DefaultParameters()
	n := p.CKKS().N()
	l := p.shareLayout()
	if want := baseHeaderSize + decryptShareExtra + 2*n*8; l.size(n) != want {
		t.Fatalf("default decryption share of %d bytes (%.2f per slot), want %d (%.2f per slot)",
			l.size(n), float64(l.size(n))/float64(n), want, float64(want)/float64(n))
	}
}

// TestDecryptShareRounded: shares at the share level combine into the
// same average as the plaintext FedAvg, to the precision the tests
// assert, and a share in the version-1 layout is refused by its version.
func TestDecryptShareRounded(t *testing.T) {
	params := testParams(t)
	if params.shareLevel() != params.CKKS().MaxLevel()-1 {
		t.Fatalf("test set shares at level %d, want %d", params.shareLevel(), params.CKKS().MaxLevel()-1)
	}
	cm := newCommittee(t, params, 5, 3)
	agg, want := encryptedRound(t, cm, 2*params.Slots()+5, []float64{4, 60000, 17}, 9)
	got, _, err := decrypt(t, cm, agg, 1, cm.ids[1:4])
	if err != nil {
		t.Fatal(err)
	}
	e := maxAbsDiff(got, want)
	t.Logf("max error of the average with rounded c₀ and shares: %.3g", e)
	if e > precisionBound {
		t.Errorf("max error %g exceeds %g", e, precisionBound)
	}
	share := marshalDecryptShare(params, cm.inst.ID(), [32]byte{1}, 0, 1, params.CKKS().RingQ().NewPoly())
	share[3] = 1
	d, err := NewDecryptor(params, cm.inst)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.checkShare(share, [32]byte{1}, 0, 1); !errors.Is(err, ErrWireVersion) {
		t.Fatalf("version-1 share: got %v, want %v", err, ErrWireVersion)
	}
}
