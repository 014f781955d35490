package client

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/ledger"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// heJobParams is the wire form of a CKKS parameter literal.
func heJobParams(pc aggregation.ParametersConfig) *tallyv1.HEParameters {
	hp := &tallyv1.HEParameters{
		LogN: int32(pc.LogN), LogDefaultScale: int32(pc.LogDefaultScale), EncoderPrecision: int32(pc.EncoderPrecision),
		LogNoiseFlooding: int32(pc.LogNoiseFlooding), Insecure: pc.Insecure,
		Flooding: &tallyv1.HEFlooding{
			Security: int32(pc.Flooding.Security), Decryptions: int64(pc.Flooding.Decryptions), Scalars: int64(pc.Flooding.Scalars),
			Contributors: int64(pc.Flooding.Contributors), Blocks: int64(pc.Flooding.Blocks), Committee: int32(pc.Flooding.Committee),
		},
	}
	for _, q := range pc.LogQ {
		hp.LogQ = append(hp.LogQ, int32(q))
	}
	for _, q := range pc.LogP {
		hp.LogP = append(hp.LogP, int32(q))
	}
	return hp
}

// TestFloorRefusesWeakJob (attack d, local floor): a coordinator that
// hands a client without a manifest an insecure parameter set (log_n 10)
// and k = 2 is refused before any update is sent, whatever else it says.
func TestFloorRefusesWeakJob(t *testing.T) {
	f := newFakeCoord(t, 1)
	f.he = newFakeHE(t, f.job.GetJobId())
	f.job.SecureAggregation, f.job.HeParams, f.job.MinGroupSize = "he", heJobParams(f.he.params.Config()), 2
	lis := listen(t, "")
	f.serve(lis)
	c, err := New(Config{Conn: dial(t, lis.Addr().String(), nil), Token: f.token, Data: testData(), PollWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = c.Run(ctx)
	if n := len(f.counts().submissions); n != 0 {
		t.Errorf("the client sent %d updates under log_n 10, k = 2; want none", n)
	}
	if !errors.Is(err, ErrFloor) {
		t.Fatalf("Run: %v, want %v", err, ErrFloor)
	}
	for _, want := range []string{"insecure", "log_n is 10, the floor is 14", "min_group_size is 2, the floor is 3"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Run: %v, want it to say %q", err, want)
		}
	}
}

// TestReceiptsResignedRefused (attack f): a client kept receipts signed by
// the coordinator's key; the coordinator comes back with another key (a
// chain re-signed after a rewrite) and offers it in the join reply. The
// client refuses to extend its file under the new key.
func TestReceiptsResignedRefused(t *testing.T) {
	dir := t.TempDir()
	receipts := filepath.Join(dir, "receipts.jsonl")
	first := newFakeCoord(t, 1)
	lis := listen(t, "")
	first.serve(lis)
	c, err := New(Config{Conn: dial(t, lis.Addr().String(), nil), Token: first.token, Data: testData(), PollWait: 50 * time.Millisecond, ReceiptsFile: receipts})
	if err != nil {
		t.Fatal(err)
	}
	if err := runClient(t, context.Background(), c); err != nil {
		t.Fatalf("first run: %v", err)
	}
	before, err := os.ReadFile(receipts)
	if err != nil || len(before) == 0 {
		t.Fatalf("no receipt kept in the first run: %v", err)
	}

	// The same job under a new receipt key, its first receipt re-signed.
	second := newFakeCoord(t, 2)
	_, other, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	second.receipt = other
	second.sign(ledger.Receipt{Job: second.job.GetJobId(), Round: 0, Client: second.clientID, SubmissionDigest: strings.Repeat("0", 64), Method: "fake", Mode: "plain", Value: 9})
	second.round = 1
	lis2 := listen(t, "")
	second.serve(lis2)
	c2, err := New(Config{Conn: dial(t, lis2.Addr().String(), nil), Token: second.token, Data: testData(), PollWait: 50 * time.Millisecond, ReceiptsFile: receipts})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = c2.Run(ctx)
	after, _ := os.ReadFile(receipts)
	if string(after) != string(before) {
		t.Errorf("the receipts file changed under another key:\n%s", after)
	}
	if !errors.Is(err, ErrReceiptChain) {
		t.Fatalf("Run against a re-signed chain: %v, want %v", err, ErrReceiptChain)
	}
}

// TestReceiptsForkedChainRefused (attack f, a forked chain): the
// coordinator, same key, serves receipts that rewrite what the client
// kept: another receipt under a kept sequence number, a second receipt for
// a round already receipted, and a next receipt that does not chain from
// the last one kept. Each is refused with ErrReceiptChain and the file is
// left as it was; a resent copy of a kept receipt is skipped.
func TestReceiptsForkedChainRefused(t *testing.T) {
	f := newFakeCoord(t, 1)
	receipts := filepath.Join(t.TempDir(), "receipts.jsonl")
	lis := listen(t, "")
	f.serve(lis)
	c, err := New(Config{Conn: dial(t, lis.Addr().String(), nil), Token: f.token, Data: testData(), PollWait: 50 * time.Millisecond, ReceiptsFile: receipts})
	if err != nil {
		t.Fatal(err)
	}
	if err := runClient(t, context.Background(), c); err != nil {
		t.Fatal(err)
	}
	kept := f.receipts[0] // seq 1, round 0
	before, _ := os.ReadFile(receipts)
	forge := func(r ledger.Receipt) []byte {
		r.Hash = r.ComputeHash()
		h, _ := hex.DecodeString(r.Hash)
		r.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(f.receipt, h))
		b, _ := json.Marshal(r)
		return b
	}
	for _, tc := range []struct {
		name string
		r    ledger.Receipt
		want string
	}{
		{"same-seq", ledger.Receipt{Seq: 1, Job: kept.Job, Round: 0, Client: kept.Client, SubmissionDigest: kept.SubmissionDigest, Method: "fake", Mode: "plain", Value: 9}, "seq 1 has hash"},
		{"same-round", ledger.Receipt{Seq: 2, Job: kept.Job, Round: 0, Client: kept.Client, SubmissionDigest: kept.SubmissionDigest, Method: "fake", Mode: "plain", Value: 9, PrevHash: kept.Hash}, "round 0 was receipted"},
		{"unchained", ledger.Receipt{Seq: 2, Job: kept.Job, Round: 1, Client: kept.Client, Method: "fake", Mode: "plain", PrevHash: strings.Repeat("ab", 32)}, "chains from"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c2, err := New(Config{Conn: dial(t, lis.Addr().String(), nil), Token: f.token, Data: testData(), ReceiptsFile: receipts})
			if err != nil {
				t.Fatal(err)
			}
			c2.sig.bind(kept.Job, kept.Client)
			c2.book.pub = f.receipt.Public().(ed25519.PublicKey)
			batch := [][]byte{forge(kept), forge(tc.r)} // a resent kept receipt, then the forgery
			if tc.r.Seq == kept.Seq {
				batch = batch[1:]
			}
			if err := c2.keepReceipts(batch); !errors.Is(err, ErrReceiptChain) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("keepReceipts: %v, want %v saying %q", err, ErrReceiptChain, tc.want)
			}
			if after, _ := os.ReadFile(receipts); string(after) != string(before) {
				t.Errorf("the receipts file changed:\n%s", after)
			}
		})
	}
}
