package client

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/internal/auth"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// fakeHE is the fake coordinator's secure aggregation: a committee of
// three members it runs itself (threshold 2), whose collective public key
// and the members' certificate of it it serves to the client. The client
// under test is not on the committee; it only encrypts under the key, and
// finds the members' identity keys in keys (as in a manifest).
type fakeHE struct {
	params  aggregation.Parameters
	inst    *aggregation.KeyGenInstance
	members map[string]*aggregation.Member
	ids     []string
	keys    fakeKeys
	pk      []byte
	cert    []byte
	keyID   [32]byte
}

// fakeKeys is a MemberKeys the test controls.
type fakeKeys map[string]ed25519.PublicKey

func (k fakeKeys) IdentityKey(id string) (ed25519.PublicKey, bool) {
	key, ok := k[id]
	return key, ok
}

// heTestConfig is a small, INSECURE parameter set (LogN 10) so that the
// test runs in seconds under the race detector. It exists only here.
func heTestConfig() aggregation.ParametersConfig {
	cfg := aggregation.DefaultConfig()
	cfg.LogN = 10
	cfg.Insecure = true
	return cfg
}

func newFakeHE(t *testing.T, job string) *fakeHE {
	t.Helper()
	params, err := aggregation.NewParameters(heTestConfig())
	if err != nil {
		t.Fatal(err)
	}
	// k = 2: the members decrypt the client's update summed with one
	// other contribution, never alone.
	policy, err := aggregation.NewPolicy(aggregation.PolicyConfig{MinContributors: 2})
	if err != nil {
		t.Fatal(err)
	}
	h := &fakeHE{params: params, members: map[string]*aggregation.Member{}, keys: fakeKeys{}}
	var infos []aggregation.MemberInfo
	for i := range 3 {
		id, err := aggregation.NewIdentity(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		pub, signer, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		m, err := aggregation.NewMember(params, fmt.Sprintf("m%d", i), id, signer, h.keys, policy, nil, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		h.members[m.ID()], h.ids, h.keys[m.ID()] = m, append(h.ids, m.ID()), pub
		infos = append(infos, m.Info())
	}
	if h.inst, err = aggregation.NewKeyGenInstance(params, aggregation.Committee{Job: job, Seed: []byte("seed"), Threshold: 2, Members: infos}); err != nil {
		t.Fatal(err)
	}
	commitments := map[string][]byte{}
	for _, id := range h.ids {
		if commitments[id], err = h.members[id].Commit(h.inst); err != nil {
			t.Fatal(err)
		}
	}
	pkShares, inbox := map[string][]byte{}, map[string]map[string][]byte{}
	for _, id := range h.ids {
		out, err := h.members[id].Reveal(h.inst, commitments)
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
	sigs := map[string][]byte{}
	for _, id := range h.ids {
		pk, sig, err := h.members[id].CertifyPublicKey(h.inst, pkShares)
		if err != nil {
			t.Fatal(err)
		}
		h.pk, sigs[id] = pk, sig
		if err := h.members[id].ReceiveThresholdShares(h.inst, inbox[id]); err != nil {
			t.Fatal(err)
		}
	}
	if h.cert, err = (&aggregation.KeyCertificate{Instance: h.inst, Signatures: sigs}).MarshalBinary(); err != nil {
		t.Fatal(err)
	}
	enc, err := aggregation.NewEncryptor(params, h.pk, 1)
	if err != nil {
		t.Fatal(err)
	}
	h.keyID = enc.KeyID()
	return h
}

// Download serves the collective public key, in two pieces, and the
// members' certificate of it (none if cert is nil).
func (f *fakeCoord) Download(req *tallyv1.DownloadRequest, stream grpc.ServerStreamingServer[tallyv1.DownloadResponse]) error {
	if err := f.signed(stream.Context(), tallyv1.CoordinatorService_Download_FullMethodName); err != nil {
		return err
	}
	f.mu.Lock()
	if f.closeWhen != nil && strings.HasPrefix(req.GetTaskId(), "decrypt/") {
		if f.downloads == nil {
			f.downloads = map[string]int{}
		}
		f.downloads[req.GetName()]++
		f.closed = f.closed || f.closeWhen(req.GetName(), f.downloads[req.GetName()])
		if f.closed {
			f.mu.Unlock()
			return refused(f.t, auth.ReasonTaskClosed, map[string]string{"task": req.GetTaskId(), auth.MetaEnded: "given_up"})
		}
	}
	obj, ok := f.objects[req.GetName()]
	f.mu.Unlock()
	if ok {
		return stream.Send(&tallyv1.DownloadResponse{Data: obj})
	}
	var data []byte
	switch {
	case f.he != nil && req.GetName() == "public-key":
		data = f.he.pk
	case f.he != nil && req.GetName() == "public-key-certificate" && f.he.cert != nil:
		data = f.he.cert
	default:
		f.wrongf("Download of %q in a job without it", req.GetName())
		return status.Errorf(codes.NotFound, "fake: no %q", req.GetName())
	}
	half := len(data) / 2
	for _, part := range [][]byte{data[:half], data[half:]} {
		if err := stream.Send(&tallyv1.DownloadResponse{Data: part}); err != nil {
			return err
		}
	}
	return nil
}

// TestRunEncryptedUpdate: under secure aggregation the client fetches the
// collective key the task names, encrypts n·Δ and n under it and streams
// one ciphertext per message. The fake's committee decrypts the sum of
// that and one known contribution (its policy never decrypts one update
// alone), and what comes out is the update the client trained.
func TestRunEncryptedUpdate(t *testing.T) {
	f := newFakeCoord(t, 1)
	f.he = newFakeHE(t, f.job.GetJobId())
	hp := heJobParams(f.he.params.Config())
	f.job.SecureAggregation, f.job.HeParams, f.job.MinGroupSize = "he", hp, 2
	lis := listen(t, "")
	f.serve(lis)
	data := testData()
	c, err := New(Config{Conn: dial(t, lis.Addr().String(), nil), Token: f.token, Data: data, PollWait: 50 * time.Millisecond,
		ReceiptsFile: filepath.Join(t.TempDir(), "receipts.jsonl"), MemberKeys: f.he.keys, TestOnlyWeakParameters: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := runClient(t, context.Background(), c); err != nil {
		t.Fatalf("Run: %v, want nil", err)
	}
	f.checkProtocol()
	n := f.counts()
	if len(n.submissions) != 1 {
		t.Fatalf("%d submissions, want 1", len(n.submissions))
	}
	s := n.submissions[0]
	numParams := int(f.job.GetNumParams())
	blocks := f.he.params.Blocks(numParams)
	if s.Header.GetEncoding() != "ckks" || s.Header.GetLength() != int64(blocks) || len(s.Messages) != blocks || s.Header.GetSamples() != int64(data.Len()) {
		t.Fatalf("header encoding %q length %d samples %d in %d messages, want ckks, %d ciphertexts, %d samples, one per message",
			s.Header.GetEncoding(), s.Header.GetLength(), s.Header.GetSamples(), len(s.Messages), blocks, data.Len())
	}

	// The header carries the client's statement over exactly these
	// ciphertexts, signed with its identity key.
	var sub aggregation.Submission
	if err := sub.UnmarshalBinary(s.Header.GetSubmission()); err != nil {
		t.Fatalf("signed submission: %v", err)
	}
	if err := sub.Verify(c.sig.publicKey()); err != nil {
		t.Fatal(err)
	}
	if sub.Job != f.job.GetJobId() || sub.Client != f.clientID || sub.Round != 0 || sub.Weight != uint64(data.Len()) || sub.Key != f.he.keyID {
		t.Fatalf("submission names job %q client %q round %d weight %d key %x; want %q, %q, 0, %d, %x",
			sub.Job, sub.Client, sub.Round, sub.Weight, sub.Key[:8], f.job.GetJobId(), f.clientID, data.Len(), f.he.keyID[:8])
	}
	for b, ct := range s.Messages {
		if err := sub.CheckCiphertext(f.he.params, b, ct); err != nil {
			t.Fatal(err)
		}
	}
	f.he.keys[f.clientID] = c.sig.publicKey()

	acc, err := aggregation.NewAccumulator(f.he.params, f.he.keyID, numParams)
	if err != nil {
		t.Fatal(err)
	}
	for _, ct := range s.Messages {
		if err := acc.Add(f.clientID, ct); err != nil {
			t.Fatalf("the client's ciphertext does not add: %v", err)
		}
	}
	// The second contribution: a zero update of weight 1.
	enc, err := aggregation.NewEncryptor(f.he.params, f.he.pk, 1)
	if err != nil {
		t.Fatal(err)
	}
	zeros, err := enc.EncryptUpdate(make([]float64, numParams), 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, ct := range zeros {
		if err := acc.Add("zero", ct); err != nil {
			t.Fatal(err)
		}
	}
	zpub, zkey, _ := ed25519.GenerateKey(rand.Reader)
	f.he.keys["zero"] = zpub
	zsub, err := aggregation.NewSubmission(f.he.params, f.job.GetJobId(), "zero", sub.Round, sub.Attempt, 1, zeros, zkey)
	if err != nil {
		t.Fatal(err)
	}
	zraw, _ := zsub.MarshalBinary()
	agg, err := acc.Finalize()
	if err != nil {
		t.Fatal(err)
	}
	req := aggregation.NewDecryptRequest(agg, "total", 0, f.he.ids[:2])
	req.Attempt = sub.Attempt
	// The members check the sum against both signed submissions.
	c1s := map[string][][]byte{f.clientID: s.Messages, "zero": zeros}
	ev := aggregation.Evidence{Ciphertexts: agg.Ciphertexts,
		Submissions: map[string][]byte{f.clientID: s.Header.GetSubmission(), "zero": zraw},
		Contribution: func(client string, b int) ([]byte, error) {
			return aggregation.ContributionC1(c1s[client][b]), nil
		}}
	for _, id := range req.Participants {
		if err := f.he.members[id].VerifyAggregate(req, ev); err != nil {
			t.Fatalf("member %s: %v", id, err)
		}
	}
	dec, err := aggregation.NewDecryptor(f.he.params, f.he.inst)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range req.Participants {
		if _, err := f.he.members[id].Admit(req, nil); err != nil {
			t.Fatal(err)
		}
	}
	plain := make([][]float64, len(agg.Ciphertexts))
	for b, ct := range agg.Ciphertexts {
		shares := map[string][]byte{}
		for _, id := range req.Participants {
			if shares[id], err = f.he.members[id].DecryptShare(req, b, ct); err != nil {
				t.Fatal(err)
			}
		}
		if plain[b], err = dec.CombineBlock(req, b, ct, shares); err != nil {
			t.Fatal(err)
		}
	}
	avg, weight, err := aggregation.Assemble(numParams, plain)
	if err != nil {
		t.Fatal(err)
	}
	nRows := float64(data.Len())
	if math.Abs(weight-(nRows+1)) > 1e-6 {
		t.Fatalf("decrypted total weight %v, want %v (the client's %v rows and the zero update's 1)", weight, nRows+1, nRows)
	}
	want := expectedUpdate(t, f.job, f.clientID, 0, f.global, data)
	for i := range want {
		// avg = n·Δ / (n + 1), so Δ = avg·(n + 1)/n.
		if got := avg[i] * (nRows + 1) / nRows; math.Abs(got-want[i]) > 1e-5 {
			t.Fatalf("decrypted update[%d] = %v, want %v", i, got, want[i])
		}
	}
}
