package aggregation

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkVerifyAggregate prices what a member pays to check a sum before
// it decrypts (issue 14 item 1), with the default parameters and one block:
// CPU per decryption and bytes downloaded, verified (the contributors'
// signed submissions and every c₁, summed and compared, then the share)
// against unverified (the share of the aggregate alone), as ratios.
// Contributors reuse 8 distinct ciphertexts (the work per contributor
// does not depend on the plaintext), each under its own identity key.
func BenchmarkVerifyAggregate(b *testing.B) {
	params := DefaultParameters()
	cm := benchCommittee(b, 3, 2)
	enc, err := NewEncryptor(params, cm.pk, 0)
	if err != nil {
		b.Fatal(err)
	}
	numParams := params.Slots() - 1 // one block
	const distinct = 8
	pool := make([][]byte, distinct)
	for i := range pool {
		cts, err := enc.EncryptUpdate(update(uint64(i), numParams), float64(i+1))
		if err != nil {
			b.Fatal(err)
		}
		pool[i] = cts[0]
	}
	for _, n := range []int{8, 1000} {
		b.Run(fmt.Sprintf("logN=%d/blocks=1/contributors=%d", params.CKKS().LogN(), n), func(b *testing.B) {
			acc, err := NewAccumulator(params, cm.inst.ID(), numParams)
			if err != nil {
				b.Fatal(err)
			}
			src := &testSource{cts: map[string][][]byte{}, weights: map[string]float64{}}
			for i := 0; i < n; i++ {
				id := fmt.Sprintf("c%04d", i)
				ct := pool[i%distinct]
				if err := acc.Add(id, ct); err != nil {
					b.Fatal(err)
				}
				src.cts[id], src.weights[id] = [][]byte{ct}, float64(i%distinct+1)
			}
			agg, err := acc.Finalize()
			if err != nil {
				b.Fatal(err)
			}
			cm.register(agg.Digests[0], src)
			m := cm.members[cm.ids[0]]
			var plain, verified time.Duration
			var plainBytes, verifiedBytes int
			for i := 0; i < b.N; i++ {
				req := NewDecryptRequest(agg, "total", uint64(i+1), cm.ids[:2])
				ev := cm.evidence(b, req, agg.Ciphertexts)
				fetch := ev.Contribution
				got := 0
				ev.Contribution = func(client string, blk int) ([]byte, error) {
					c1, err := fetch(client, blk)
					got += len(c1)
					return c1, err
				}
				// Unverified: the share alone (the gate is opened by a
				// verification outside the timed section).
				m.forget()
				m.verify = nil
				if err := m.VerifyAggregate(req, ev); err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				if _, err := m.admitDecryptShare(req, 0, agg.Ciphertexts[0]); err != nil {
					b.Fatal(err)
				}
				plain += time.Since(start)
				plainBytes += len(agg.Ciphertexts[0])

				// Verified: from nothing cached, check then share.
				m.forget()
				m.verify, got = nil, 0
				start = time.Now()
				if err := m.VerifyAggregate(req, ev); err != nil {
					b.Fatal(err)
				}
				if _, err := m.admitDecryptShare(req, 0, agg.Ciphertexts[0]); err != nil {
					b.Fatal(err)
				}
				verified += time.Since(start)
				subs := 0
				for _, s := range ev.Submissions {
					subs += len(s)
				}
				verifiedBytes += len(agg.Ciphertexts[0]) + subs + got
			}
			per := func(d time.Duration) float64 { return float64(d) / 1e6 / float64(b.N) }
			b.ReportMetric(per(plain), "unverified-ms/decryption")
			b.ReportMetric(per(verified), "verified-ms/decryption")
			b.ReportMetric(float64(verified)/float64(plain), "cpu-ratio")
			b.ReportMetric(float64(plainBytes)/float64(b.N), "unverified-B/member")
			b.ReportMetric(float64(verifiedBytes)/float64(b.N), "verified-B/member")
			b.ReportMetric(float64(verifiedBytes)/float64(plainBytes), "bytes-ratio")
		})
	}
}
