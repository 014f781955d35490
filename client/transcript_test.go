package client

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/ledger"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// A member's transcript is persisted beside its key file before any share
// leaves, read back by a restarted client, and a damaged file is refused
// with its path, never replaced by a fresh transcript.
func TestTranscriptFilePersistsAndRefusesDamage(t *testing.T) {
	h := newFakeHE(t, "job")
	m := h.members["m0"]
	req := verifiedRequest(t, h, m)
	if _, err := m.Admit(req, nil); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "client.key")
	c := &Client{cfg: Config{KeyFile: keyFile}, member: m}
	if err := c.saveTranscript(); err != nil {
		t.Fatal(err)
	}
	path := keyFile + ".transcript"
	tr, err := loadTranscript(path)
	if err != nil {
		t.Fatal(err)
	}
	n, head := m.TranscriptHead("job")
	if tr == nil || tr.Len() != n || tr.Head() != head {
		t.Fatalf("transcript read back: %v; want %d entries, head %x", tr, n, head[:8])
	}
	if _, ok := tr.FindRequest(req.ID()); !ok {
		t.Fatal("the admitted request is not in the persisted transcript")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".tally-transcript-*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}

	// A restarted client process with the same key file resumes it.
	conn := dial(t, listen(t, "").Addr().String(), nil)
	restarted, err := New(Config{Conn: conn, Data: testData(), KeyFile: keyFile, PollWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if restarted.transcript == nil || restarted.transcript.Head() != head {
		t.Fatal("a client restarted with the same key file did not resume its transcript")
	}

	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)/2] ^= 1
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = New(Config{Conn: conn, Data: testData(), KeyFile: keyFile, PollWait: 50 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("a damaged transcript file: err = %v, want one naming %s", err, path)
	}
	if after, _ := os.ReadFile(path); string(after) != string(raw) {
		t.Fatal("the damaged transcript file was replaced")
	}
}

// verifiedRequest is a request member m verified, as it must before it
// admits one: round 2, attempt 1, of an aggregate of two zero updates
// signed by clients a and b (whose keys h's members now pin), decrypted by
// m0 and m1.
func verifiedRequest(t *testing.T, h *fakeHE, m *aggregation.Member) aggregation.DecryptRequest {
	t.Helper()
	const numParams = 4
	enc, err := aggregation.NewEncryptor(h.params, h.pk, 1)
	if err != nil {
		t.Fatal(err)
	}
	acc, err := aggregation.NewAccumulator(h.params, h.keyID, numParams)
	if err != nil {
		t.Fatal(err)
	}
	subs, c1s := map[string][]byte{}, map[string][][]byte{}
	for _, id := range []string{"a", "b"} {
		pub, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		h.keys[id] = pub
		cts, err := enc.EncryptUpdate(make([]float64, numParams), 1)
		if err != nil {
			t.Fatal(err)
		}
		sub, err := aggregation.NewSubmission(h.params, h.inst.Job(), id, 2, 1, 1, cts, key)
		if err != nil {
			t.Fatal(err)
		}
		if subs[id], err = sub.MarshalBinary(); err != nil {
			t.Fatal(err)
		}
		for _, ct := range cts {
			if err := acc.Add(id, ct); err != nil {
				t.Fatal(err)
			}
		}
		c1s[id] = cts
	}
	agg, err := acc.Finalize()
	if err != nil {
		t.Fatal(err)
	}
	req := aggregation.NewDecryptRequest(agg, "round", 2, []string{"m0", "m1"})
	req.Attempt = 1
	ev := aggregation.Evidence{Ciphertexts: agg.Ciphertexts, Submissions: subs,
		Contribution: func(client string, b int) ([]byte, error) { return aggregation.ContributionC1(c1s[client][b]), nil }}
	if err := m.VerifyAggregate(req, ev); err != nil {
		t.Fatal(err)
	}
	return req
}

// A client checks the transcript the coordinator shows with the receipts:
// the entries must extend the chain it saw and pass the rules, and every
// receipt's head and decryptions must be on that chain.
func TestReceiptTranscriptHeadCrossCheck(t *testing.T) {
	pub, signer, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keys := fakeKeys{"m0": pub}
	policy, err := aggregation.NewPolicy(aggregation.PolicyConfig{MinContributors: 2})
	if err != nil {
		t.Fatal(err)
	}
	newClient := func() *Client {
		return &Client{cfg: Config{MemberKeys: keys}, job: &tallyv1.JobSpec{JobId: "job"}, policy: policy, log: slog.New(slog.DiscardHandler)}
	}
	// entry makes the next signed entry of chain for a request.
	entry := func(chain *aggregation.Transcript, round, attempt uint64, digest byte, contributors ...string) []byte {
		req := aggregation.DecryptRequest{Purpose: "round", Round: round, Attempt: attempt, Digests: [][32]byte{{digest}},
			Contributors: contributors, Participants: []string{"m0"}}
		e := aggregation.NewTranscriptEntry("job", uint64(chain.Len()), chain.Head(), req)
		e.Signatures = map[string][]byte{"m0": aggregation.SignTranscriptHead(signer, e.Head())}
		if err := chain.Append(e, policy); err != nil {
			t.Fatal(err)
		}
		b, err := e.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	chain := aggregation.NewTranscript("job")
	raw := [][]byte{entry(chain, 1, 1, 1, "a", "b", "c"), entry(chain, 1, 2, 2, "a", "b", "c")}
	head := chain.Head()
	e1, _ := chain.Entry(1)
	receipt := ledger.Receipt{Seq: 1, Round: 1, TranscriptHead: hex.EncodeToString(head[:]), TranscriptLen: 2,
		Decrypted: []ledger.Decryption{{Purpose: "round", Contributors: 3, Seq: 1, Round: 1, Attempt: 2, Request: hex.EncodeToString(e1.Request[:]), Status: ledger.StatusDecrypted}}}

	c := newClient()
	if err := c.observeTranscript(raw); err != nil {
		t.Fatal(err)
	}
	if err := c.checkTranscriptHead(receipt); err != nil {
		t.Fatalf("a receipt on the chain: %v", err)
	}
	t.Run("head not on the chain", func(t *testing.T) {
		r := receipt
		r.TranscriptHead = strings.Repeat("ab", 32)
		if err := c.checkTranscriptHead(r); !errors.Is(err, ErrTranscriptHead) || !violation(err) {
			t.Fatalf("err = %v, want ErrTranscriptHead", err)
		}
	})
	t.Run("decryption not the chain's", func(t *testing.T) {
		r := receipt
		r.Decrypted = []ledger.Decryption{receipt.Decrypted[0]}
		r.Decrypted[0].Attempt = 1
		if err := c.checkTranscriptHead(r); !errors.Is(err, ErrTranscriptHead) {
			t.Fatalf("err = %v, want ErrTranscriptHead", err)
		}
	})
	t.Run("entries fork the chain", func(t *testing.T) {
		other := aggregation.NewTranscript("job")
		forked := [][]byte{entry(other, 1, 1, 1, "a", "b", "c"), entry(other, 1, 2, 9, "a", "b", "c")}
		c := newClient()
		if err := c.observeTranscript(raw); err != nil {
			t.Fatal(err)
		}
		if err := c.observeTranscript(forked); !errors.Is(err, ErrTranscriptHead) || !errors.Is(err, aggregation.ErrTranscriptFork) {
			t.Fatalf("err = %v, want ErrTranscriptHead wrapping ErrTranscriptFork", err)
		}
	})
	t.Run("entries break the rules", func(t *testing.T) {
		// A signed retry of round 1 without client c: the client sees
		// that c's update was exposed by subtraction.
		bad := aggregation.NewTranscript("job")
		b0 := entry(bad, 1, 1, 1, "a", "b", "c")
		req := aggregation.DecryptRequest{Purpose: "round", Round: 1, Attempt: 2, Digests: [][32]byte{{3}}, Contributors: []string{"a", "b"}, Participants: []string{"m0"}}
		e := aggregation.NewTranscriptEntry("job", 1, bad.Head(), req)
		e.Signatures = map[string][]byte{"m0": aggregation.SignTranscriptHead(signer, e.Head())}
		b1, _ := e.MarshalBinary()
		c := newClient()
		if err := c.observeTranscript([][]byte{b0, b1}); !errors.Is(err, ErrTranscriptHead) || !errors.Is(err, aggregation.ErrSetDifference) {
			t.Fatalf("err = %v, want ErrTranscriptHead wrapping ErrSetDifference", err)
		}
	})
}
