package client

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tallyfl/tally/aggregation"
)

// useHE makes f's job run under secure aggregation with h's key.
func (f *fakeCoord) useHE(h *fakeHE) {
	hp := heJobParams(h.params.Config())
	f.he = h
	f.job.SecureAggregation, f.job.HeParams, f.job.MinGroupSize = "he", hp, 2
}

// withoutSignature re-encodes h's certificate without member id's signature.
func withoutSignature(t *testing.T, h *fakeHE, id string) []byte {
	t.Helper()
	cert, err := aggregation.UnmarshalKeyCertificate(h.params, h.cert)
	if err != nil {
		t.Fatal(err)
	}
	delete(cert.Signatures, id)
	b, err := cert.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestClientRefusesUnsignedKey is attack (a) of issue 13: a coordinator
// that hands clients a public key the committee did not sign — a key of
// its own, one signed by only c−1 members, one from a committee it made
// up — gets no update: the client refuses with a named error and stops
// before it encrypts anything. Before the fix the client encrypted under
// whatever key arrived and sent its update.
func TestClientRefusesUnsignedKey(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setup  func(t *testing.T, f *fakeCoord, genuine *fakeHE)
		pinned bool
		want   error
	}{
		{"no-certificate", func(t *testing.T, f *fakeCoord, g *fakeHE) { g.cert = nil }, true, aggregation.ErrUnsignedKey},
		{"c-1-signatures", func(t *testing.T, f *fakeCoord, g *fakeHE) { g.cert = withoutSignature(t, g, "m2") }, true, aggregation.ErrUnsignedKey},
		{"coordinator-committee", func(t *testing.T, f *fakeCoord, g *fakeHE) {
			// A committee the coordinator runs itself, with a valid
			// certificate under keys nobody pinned.
			own := newFakeHE(t, f.job.GetJobId())
			*g = fakeHE{params: own.params, inst: own.inst, members: own.members, ids: own.ids, keys: g.keys, pk: own.pk, cert: own.cert, keyID: own.keyID}
		}, true, aggregation.ErrMemberKey},
		{"key-substituted", func(t *testing.T, f *fakeCoord, g *fakeHE) {
			own := newFakeHE(t, f.job.GetJobId())
			g.pk, g.keyID = own.pk, own.keyID
		}, true, aggregation.ErrUnsignedKey},
		{"unpinned/no-certificate", func(t *testing.T, f *fakeCoord, g *fakeHE) { g.cert = nil }, false, aggregation.ErrUnsignedKey},
		{"unpinned/c-1-signatures", func(t *testing.T, f *fakeCoord, g *fakeHE) { g.cert = withoutSignature(t, g, "m0") }, false, aggregation.ErrUnsignedKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeCoord(t, 1)
			h := newFakeHE(t, f.job.GetJobId())
			tc.setup(t, f, h)
			f.useHE(h)
			lis := listen(t, "")
			f.serve(lis)
			cfg := Config{Conn: dial(t, lis.Addr().String(), nil), Token: f.token, Data: testData(), PollWait: 50 * time.Millisecond, TestOnlyWeakParameters: true}
			if tc.pinned {
				cfg.MemberKeys = h.keys
			}
			c, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			err = runClient(t, context.Background(), c)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Run: %v, want %v", err, tc.want)
			}
			if n := f.counts(); len(n.submissions) != 0 {
				t.Fatalf("the client sent %d update(s) under a key the committee did not sign", len(n.submissions))
			}
			t.Logf("refused: %v", err)
		})
	}
}
