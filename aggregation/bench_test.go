package aggregation

import (
	"crypto/sha256"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/tuneinsight/lattigo/v6/schemes/ckks"
)

// Benchmarks use the default (secure) parameters and 1M parameters, the
// sizes of the acceptance criteria.
const benchParams = 1_000_000

// TestDefaultParametersPrecision measures the error of the whole path
// with the default parameters: 8 clients with sample-count weights, 2-of-3
// threshold decryption with σ = 2^30 flooding, two blocks.
func TestDefaultParametersPrecision(t *testing.T) {
	params := DefaultParameters()
	cm := newCommittee(t, params, 3, 2)
	n := params.Slots() + 100
	agg, want := encryptedRound(t, cm, n, []float64{120, 3000, 45, 800, 5, 60000, 700, 9}, 21)
	got, weight, err := decrypt(t, cm, agg, 1, cm.ids[:2])
	if err != nil {
		t.Fatal(err)
	}
	e := maxAbsDiff(got, want)
	t.Logf("default parameters, %d parameters: max error %.3g on the average, %.3g on the sum Σ nᵢ·Δᵢ", n, e, e*weight)
	if e > precisionBound {
		t.Fatalf("max error %g exceeds %g", e, precisionBound)
	}
}

func benchCommittee(b *testing.B, c, t int) *committee {
	b.Helper()
	return newCommittee(b, DefaultParameters(), c, t)
}

func BenchmarkClientEncrypt(b *testing.B) {
	params := DefaultParameters()
	cm := benchCommittee(b, 2, 2)
	delta := update(1, benchParams)
	const weight = 37
	cp := params.CKKS()

	// The bare lattigo path: the same vector (already weighted, weight in
	// the slot after the last parameter), encoded and encrypted block by
	// block on one goroutine, buffers reused, no marshalling.
	flat := make([]float64, params.Blocks(benchParams)*params.Slots())
	for i, v := range delta {
		flat[i] = weight * v
	}
	flat[benchParams] = weight
	pk, _, err := parsePublicKey(params, cm.pk)
	if err != nil {
		b.Fatal(err)
	}
	ecd := ckks.NewEncoder(cp, 53)
	lenc := ckks.NewEncryptor(cp, pk)
	pt := ckks.NewPlaintext(cp, cp.MaxLevel())
	ct := ckks.NewCiphertext(cp, 1, cp.MaxLevel())
	bare := func() time.Duration {
		start := time.Now()
		for s := 0; s < len(flat); s += params.Slots() {
			if err := ecd.Encode(flat[s:s+params.Slots()], pt); err != nil {
				b.Fatal(err)
			}
			if err := lenc.Encrypt(pt, ct); err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(start)
	}

	for _, workers := range []int{1, 2} {
		b.Run(fmt.Sprintf("logN=14/params=1e6/workers=%d", workers), func(b *testing.B) {
			enc, err := NewEncryptor(params, cm.pk, workers)
			if err != nil {
				b.Fatal(err)
			}
			var ours, lattigo time.Duration
			var size int
			var cts [][]byte
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				// A client reuses last round's buffers once they are sent.
				cts, err = enc.EncryptUpdateInto(cts, delta, weight)
				if err != nil {
					b.Fatal(err)
				}
				ours += time.Since(start)
				b.StopTimer()
				size = 0
				for _, c := range cts {
					size += len(c)
				}
				lattigo += bare()
				b.StartTimer()
			}
			b.ReportMetric(float64(benchParams)*float64(b.N)/ours.Seconds(), "params/s")
			b.ReportMetric(float64(size)/benchParams, "bytes/param")
			b.ReportMetric(lattigo.Seconds()/ours.Seconds(), "ratio_vs_lattigo")
		})
	}
}

func BenchmarkAggregate(b *testing.B) {
	params := DefaultParameters()
	cm := benchCommittee(b, 2, 2)
	enc, _ := NewEncryptor(params, cm.pk, 0)
	cts, err := enc.EncryptUpdate(update(2, benchParams), 5)
	if err != nil {
		b.Fatal(err)
	}
	perClient := 0
	for _, c := range cts {
		perClient += len(c)
	}
	const clients = 10
	b.Run("logN=14/params=1e6/clients=10", func(b *testing.B) {
		b.SetBytes(int64(perClient * clients))
		for i := 0; i < b.N; i++ {
			acc, err := NewAccumulator(params, cm.inst.ID(), benchParams)
			if err != nil {
				b.Fatal(err)
			}
			for c := 0; c < clients; c++ {
				id := fmt.Sprintf("c%d", c)
				for _, ct := range cts {
					if err := acc.Add(id, ct); err != nil {
						b.Fatal(err)
					}
				}
			}
			if _, err := acc.Finalize(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(clients*b.N)/b.Elapsed().Seconds(), "clients/s")
	})
}

func BenchmarkDecrypt(b *testing.B) {
	params := DefaultParameters()
	cm := benchCommittee(b, 5, 3)
	agg, want := encryptedRound(b, cm, benchParams, []float64{100, 200, 300}, 3)
	dec, _ := NewDecryptor(params, cm.inst)
	b.Run("logN=14/params=1e6/c=5/t=3", func(b *testing.B) {
		var shareTime, combineTime time.Duration
		var maxErr float64
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			// Members never serve a digest twice: forget between
			// iterations so the same aggregate can be timed again.
			for _, m := range cm.members {
				m.forget()
			}
			b.StartTimer()
			req := NewDecryptRequest(agg, "total", 1, cm.ids[1:4])
			b.StopTimer()
			cm.verifyAll(b, req, agg.Ciphertexts)
			b.StartTimer()
			blocks := make([][]float64, len(agg.Ciphertexts))
			for blk, ct := range agg.Ciphertexts {
				shares := map[string][]byte{}
				start := time.Now()
				for _, p := range req.Participants {
					s, err := cm.members[p].admitDecryptShare(req, blk, ct)
					if err != nil {
						b.Fatal(err)
					}
					shares[p] = s
				}
				shareTime += time.Since(start)
				start = time.Now()
				vals, err := dec.CombineBlock(req, blk, ct, shares)
				if err != nil {
					b.Fatal(err)
				}
				combineTime += time.Since(start)
				blocks[blk] = vals
			}
			start := time.Now()
			got, _, err := Assemble(benchParams, blocks)
			if err != nil {
				b.Fatal(err)
			}
			combineTime += time.Since(start)
			maxErr = max(maxErr, maxAbsDiff(got, want))
		}
		n := float64(b.N)
		b.ReportMetric(shareTime.Seconds()/n/3, "share_s/member")
		b.ReportMetric(combineTime.Seconds()/n, "combine_s")
		b.ReportMetric(maxErr*1e9, "max_error_1e-9")
		// What a member sends per decryption, per parameter.
		b.ReportMetric(float64(params.shareLayout().size(params.CKKS().N())*len(agg.Ciphertexts))/benchParams, "share_bytes/param")
	})
}

// BenchmarkInfluence times the influence mode with the default parameters
// for one client of 1e5 parameters (7 blocks): the coordinator's Add per
// block (plaintext × ciphertext, added into the client's running
// ciphertext) and Finalize, a member's coefficient share, and the
// combination of 3 of 5 shares.
func BenchmarkInfluence(b *testing.B) {
	const numParams = 100_000
	params := DefaultParameters()
	cm := benchCommittee(b, 5, 3)
	enc, _ := NewEncryptor(params, cm.pk, 0)
	upd := update(5, numParams)
	cts, err := enc.EncryptUpdate(upd, 40)
	if err != nil {
		b.Fatal(err)
	}
	grad := update(6, numParams)
	// The exact scalar and the unit max|g|·‖nᵢΔᵢ‖₂ errors are reported in.
	var want, sq, maxG float64
	for j, g := range grad {
		want += g * 40 * upd[j]
		sq += 40 * upd[j] * 40 * upd[j]
		maxG = max(maxG, math.Abs(g))
	}
	unit := maxG * math.Sqrt(sq)
	dec, _ := NewDecryptor(params, cm.inst)
	b.Run("logN=14/params=1e5", func(b *testing.B) {
		var encode, add, fin, share, combine time.Duration
		var maxErr float64
		for i := 0; i < b.N; i++ {
			start := time.Now()
			inf, err := NewInfluence(params, cm.inst.ID(), grad, numParams)
			if err != nil {
				b.Fatal(err)
			}
			encode += time.Since(start)
			start = time.Now()
			for _, ct := range cts {
				if err := inf.Add("c", ct); err != nil {
					b.Fatal(err)
				}
			}
			add += time.Since(start)
			start = time.Now()
			ict, d, err := inf.Finalize("c")
			if err != nil {
				b.Fatal(err)
			}
			fin += time.Since(start)
			// Same inputs, same influence ciphertext: members would
			// refuse its digest a second time, so they forget between
			// iterations (outside the timed sections).
			for _, m := range cm.members {
				m.forget()
			}
			cm.register(d, &testSource{cts: map[string][][]byte{"c": cts}, weights: map[string]float64{"c": 40}, grad: grad})
			req := NewInfluenceRequest(cm.inst.ID(), 1, "c", d, cm.gradientDigest(d), cm.ids)
			b.StopTimer()
			cm.verifyAll(b, req, [][]byte{ict})
			b.StartTimer()
			shares := map[string][]byte{}
			start = time.Now()
			for _, p := range cm.ids[:3] {
				if shares[p], err = cm.members[p].admitCoefficientShare(req, ict); err != nil {
					b.Fatal(err)
				}
			}
			share += time.Since(start)
			start = time.Now()
			got, err := dec.CombineCoefficient(req, ict, shares)
			if err != nil {
				b.Fatal(err)
			}
			combine += time.Since(start)
			maxErr = max(maxErr, math.Abs(got-want))
		}
		n := float64(b.N)
		blocks := float64(len(cts))
		b.ReportMetric(add.Seconds()/n/blocks, "add_s/block")
		b.ReportMetric(float64(params.CiphertextSize())*blocks*n/add.Seconds()/1e6, "add_MB/s")
		b.ReportMetric(encode.Seconds()/n, "gradient_encode_s")
		b.ReportMetric(fin.Seconds()/n, "finalize_s")
		b.ReportMetric(share.Seconds()/n/3, "share_s/member")
		b.ReportMetric(combine.Seconds()/n, "combine_s")
		b.ReportMetric(float64(params.CoefficientShareSize()), "share_bytes")
		b.ReportMetric(maxErr, "abs_error")
		b.ReportMetric(maxErr/unit*1e9, "error/(max|g|·‖nΔ‖₂)_1e-9")
	})
}

// BenchmarkKeyGen measures one whole key generation of a committee of c
// members (default parameters), every member's steps run in turn in this
// process: member-ms is one member's compute time (the members work in
// parallel in a real job), coord-ms the coordinator's (aggregating, and
// checking the commitments, reveals and key signatures), and the bytes
// are what one member sends and receives and what the coordinator
// receives and sends, counting the protocol messages (not gRPC framing).
// cert-B is the certificate each client downloads with the key.
func BenchmarkKeyGen(b *testing.B) {
	params := DefaultParameters()
	policy, err := NewPolicy(PolicyConfig{})
	if err != nil {
		b.Fatal(err)
	}
	// The committee sizes of the demo (5, t = 3) and of the 1,000-client
	// simulation (16, t = 11).
	for _, ct := range [][2]int{{5, 3}, {16, 11}} {
		c, t := ct[0], ct[1]
		b.Run(fmt.Sprintf("logN=14/c=%d/t=%d", c, t), func(b *testing.B) {
			var memberTime, coordTime time.Duration
			var up, down, certBytes int
			for i := 0; i < b.N; i++ {
				ms, _ := newTestMembers(b, params, c, policy)
				inst, err := NewKeyGenInstance(params, Committee{Job: "job", Seed: []byte("seed"), Threshold: t, Members: infosOf(ms)})
				if err != nil {
					b.Fatal(err)
				}
				instBlob, _ := inst.MarshalBinary()
				member := func(f func()) { s := time.Now(); f(); memberTime += time.Since(s) }
				coord := func(f func()) { s := time.Now(); f(); coordTime += time.Since(s) }
				up, down = 0, 0
				// Commit.
				commitments := map[string][]byte{}
				for _, m := range ms {
					down += len(instBlob)
					member(func() { commitments[m.ID()], err = m.Commit(inst) })
					if err != nil {
						b.Fatal(err)
					}
					up += len(commitments[m.ID()])
					coord(func() { _, err = inst.VerifyCommitment(nil, m.ID(), commitments[m.ID()]) })
					if err != nil {
						b.Fatal(err)
					}
				}
				// Reveal.
				pkShares := map[string][]byte{}
				inbox := map[string]map[string][]byte{}
				for _, m := range ms {
					down += len(instBlob)
					for _, v := range commitments {
						down += len(v)
					}
					var out *KeyGenShares
					member(func() { out, err = m.Reveal(inst, commitments) })
					if err != nil {
						b.Fatal(err)
					}
					up += len(out.PublicKeyShare)
					coord(func() { err = inst.CheckRevealedShare(m.ID(), commitments[m.ID()], out.PublicKeyShare) })
					if err != nil {
						b.Fatal(err)
					}
					pkShares[m.ID()] = out.PublicKeyShare
					for to, s := range out.Sealed {
						up += len(s)
						if inbox[to] == nil {
							inbox[to] = map[string][]byte{}
						}
						inbox[to][m.ID()] = s
					}
				}
				var pk []byte
				var pkDigest [32]byte
				coord(func() {
					pk, err = AggregatePublicKey(params, inst, pkShares)
					pkDigest = sha256.Sum256(pk)
				})
				if err != nil {
					b.Fatal(err)
				}
				// Threshold: fetch and check the shares, sign the key, open
				// the sealed shares.
				sigs := map[string][]byte{}
				for _, m := range ms {
					for _, s := range pkShares {
						down += len(s)
					}
					for _, s := range inbox[m.ID()] {
						down += len(s)
					}
					var sig []byte
					member(func() {
						_, sig, err = m.CertifyPublicKey(inst, pkShares)
						if err == nil {
							err = m.ReceiveThresholdShares(inst, inbox[m.ID()])
						}
					})
					if err != nil {
						b.Fatal(err)
					}
					up += len(sig) + 1 // the signature and the ack
					coord(func() { err = inst.VerifyKeySignature(nil, m.ID(), pkDigest, sig) })
					if err != nil {
						b.Fatal(err)
					}
					sigs[m.ID()] = sig
				}
				var cert []byte
				coord(func() { cert, err = (&KeyCertificate{Instance: inst, Signatures: sigs}).MarshalBinary() })
				if err != nil {
					b.Fatal(err)
				}
				certBytes = len(cert)
			}
			n := float64(b.N)
			b.ReportMetric(float64(memberTime.Microseconds())/1e3/n/float64(c), "member-ms")
			b.ReportMetric(float64(coordTime.Microseconds())/1e3/n, "coord-ms")
			b.ReportMetric(float64(up)/float64(c), "member-up-B")
			b.ReportMetric(float64(down)/float64(c), "member-down-B")
			b.ReportMetric(float64(up), "coord-in-B")
			b.ReportMetric(float64(down), "coord-out-B")
			b.ReportMetric(float64(certBytes), "cert-B")
		})
	}
}
