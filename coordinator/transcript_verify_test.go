package coordinator

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/ledger"
)

// transcriptState writes a state file of the store job with a transcript
// of three entries signed by enrolled members c0 and c1 and one completed
// round whose receipts list them; edit may change the round's record (or
// the entries) before they are written.
func transcriptState(t *testing.T, edit func(entries []aggregation.TranscriptEntry, rec *engine.RoundRecord)) string {
	t.Helper()
	job := storeJob(t, nil)
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := OpenJobStore(path, job, nil)
	if err != nil {
		t.Fatal(err)
	}
	signers := map[string]ed25519.PrivateKey{}
	for _, id := range []string{"c0", "c1"} {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		signers[id] = priv
		if err := s.Bind("token-"+id, 1, Binding{Client: id, Key: pub}); err != nil {
			t.Fatal(err)
		}
	}
	policy, _ := aggregation.NewPolicy(aggregation.PolicyConfig{MinContributors: 2})
	chain := aggregation.NewTranscript("stored")
	ids := job.ClientIDs()
	reqs := []aggregation.DecryptRequest{
		{Purpose: "moments", Round: 0, Attempt: 1, Digests: [][32]byte{{1}}, Contributors: ids, Participants: []string{"c0", "c1"}},
		{Purpose: "round", Round: 1, Attempt: 1, Digests: [][32]byte{{2}}, Contributors: ids, Participants: []string{"c0", "c1"}},
		{Purpose: "round", Round: 1, Attempt: 2, Digests: [][32]byte{{3}}, Contributors: ids, Participants: []string{"c0", "c1"}},
	}
	var entries []aggregation.TranscriptEntry
	for _, req := range reqs {
		e := aggregation.NewTranscriptEntry("stored", uint64(chain.Len()), chain.Head(), req)
		e.Signatures = map[string][]byte{}
		for id, k := range signers {
			e.Signatures[id] = aggregation.SignTranscriptHead(k, e.Head())
		}
		if err := chain.Append(e, policy); err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	head := chain.Head()
	rec := &engine.RoundRecord{Round: 1, Attempt: 2, Selected: ids, Contributors: ids, Digests: map[string][32]byte{},
		Valuation:      &engine.RoundValuation{Mode: engine.ModeInfluence, Method: engine.MethodInfluence, Values: map[string]float64{}},
		TranscriptHead: hex.EncodeToString(head[:]), TranscriptLen: 3}
	for i, e := range entries {
		status := engine.StatusDecrypted
		if i == 1 {
			status = engine.StatusFailed
		}
		rec.Transcript = append(rec.Transcript, engine.TranscriptDecryption{Seq: i, Round: int(e.Round), Attempt: int(e.Attempt),
			Purpose: e.Purpose, Contributors: len(e.Contributors), Request: hex.EncodeToString(e.Request[:]), Status: status})
	}
	for _, id := range ids {
		rec.Digests[id] = sha256.Sum256([]byte(id))
	}
	if edit != nil {
		edit(entries, rec)
	}
	for i, e := range entries {
		b, err := e.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Apply(engine.ActPersist{Transcript: &engine.TranscriptRecord{Seq: i, Entry: b}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Apply(engine.ActPersist{Round: rec}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func verifyStored(t *testing.T, path string) (TranscriptReport, error) {
	t.Helper()
	db, err := ledger.Open(path, ledger.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	return VerifyTranscript(db)
}

func TestVerifyTranscript(t *testing.T) {
	rep, err := verifyStored(t, transcriptState(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Entries != 3 || rep.Signed != 3 || rep.Receipted != 3 || rep.Decrypted != 2 || rep.Failed != 1 {
		t.Fatalf("report %+v, want 3 entries, all signed and receipted, 2 decrypted and 1 failed", rep)
	}
	for _, tc := range []struct {
		name string
		edit func(entries []aggregation.TranscriptEntry, rec *engine.RoundRecord)
		want string
	}{
		{"a failed attempt left out of the receipts", func(_ []aggregation.TranscriptEntry, rec *engine.RoundRecord) {
			rec.Transcript = append(rec.Transcript[:1], rec.Transcript[2:]...)
		}, "is in no receipt"},
		{"a receipt calling an entry another attempt", func(_ []aggregation.TranscriptEntry, rec *engine.RoundRecord) {
			rec.Transcript[2].Attempt = 3
		}, "is not transcript entry 2"},
		{"a receipt naming a multiplier vector the entry does not commit to", func(_ []aggregation.TranscriptEntry, rec *engine.RoundRecord) {
			rec.Transcript[0].Gradient = strings.Repeat("cd", 32)
		}, "is not transcript entry 0"},
		{"a forged signature", func(entries []aggregation.TranscriptEntry, _ *engine.RoundRecord) {
			entries[1].Signatures["c0"] = entries[1].Signatures["c1"]
		}, "not valid"},
		{"a head that is not the chain's", func(_ []aggregation.TranscriptEntry, rec *engine.RoundRecord) {
			rec.TranscriptHead = strings.Repeat("ab", 32)
		}, "which is not the transcript's"},
		{"a leave-one-out retry", func(entries []aggregation.TranscriptEntry, rec *engine.RoundRecord) {
			// Entry 2 re-made, unsigned, with one client fewer: the chain
			// holds, the rules do not.
			req := aggregation.DecryptRequest{Purpose: "round", Round: 1, Attempt: 2, Digests: [][32]byte{{3}},
				Contributors: entries[2].Contributors[1:], Participants: entries[2].Participants}
			entries[2] = aggregation.NewTranscriptEntry("stored", 2, entries[1].Head(), req)
			head := entries[2].Head()
			rec.TranscriptHead = hex.EncodeToString(head[:])
			rec.Transcript[2].Contributors, rec.Transcript[2].Request = len(req.Contributors), hex.EncodeToString(entries[2].Request[:])
		}, "differ by"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := verifyStored(t, transcriptState(t, tc.edit))
			if !errors.Is(err, ErrTranscriptVerify) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrTranscriptVerify saying %q", err, tc.want)
			}
		})
	}
}
