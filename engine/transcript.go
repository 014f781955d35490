package engine

import (
	"encoding/hex"
	"fmt"
	"slices"

	"github.com/tallyfl/tally/aggregation"
)

// The coordinator's copy of the job's decryption transcript
// (aggregation.Transcript). Every decryption request the engine publishes
// becomes the chain's next entry when it is published — answered or not,
// it was asked, and the members that answered hold it — and is persisted
// before the task goes out (ActPersist.Transcript). Each participant's
// signature of the new head comes back with its shares and is added to the
// entry. A member is handed, with each task, the entries since the last
// one it signed (all of them after a coordinator restart; it skips those
// it holds). The engine checks each request against the chain under the
// members' rules before it asks: an honest coordinator does not ask what
// honest members must refuse.

// transcriptState is the engine's part of the transcript.
type transcriptState struct {
	chain  *aggregation.Transcript
	policy aggregation.Policy
	// encoded caches each entry's binary form, signatures included.
	encoded [][]byte
	// seen is, per member, the number of entries it is known to hold.
	seen map[string]int
	// pending is the entry of the decryption in flight, -1 if none.
	pending int
	// decrypted marks the entries whose shares combined; reported is the
	// number of entries already listed on a completed round's record.
	decrypted map[int]bool
	reported  int
}

func newTranscriptState(job string, k, l int) (*transcriptState, error) {
	p, err := aggregation.NewPolicy(aggregation.PolicyConfig{MinContributors: k, MaxScalarsPerRound: l})
	if err != nil {
		return nil, err
	}
	return &transcriptState{chain: aggregation.NewTranscript(job), policy: p, seen: map[string]int{}, pending: -1, decrypted: map[int]bool{}}, nil
}

// restore rebuilds the chain from its stored entries.
func (ts *transcriptState) restore(raw [][]byte) error {
	for i, b := range raw {
		var e aggregation.TranscriptEntry
		if err := e.UnmarshalBinary(b); err != nil {
			return fmt.Errorf("coordinator: stored transcript entry %d: %w", i, err)
		}
		if err := ts.chain.Restore(e); err != nil {
			return fmt.Errorf("coordinator: stored transcript entry %d: %w", i, err)
		}
		ts.encoded = append(ts.encoded, slices.Clone(b))
	}
	return nil
}

// check is what the members will say of req as the chain's next entry.
func (ts *transcriptState) check(req aggregation.DecryptRequest) error {
	e := aggregation.NewTranscriptEntry(ts.chain.Job(), uint64(ts.chain.Len()), ts.chain.Head(), req)
	return ts.chain.Check(&e, ts.policy)
}

// publish appends req's entry (checked by check) and returns, per
// participant, the entries it has not seen, and the persist action of the
// new entry.
func (ts *transcriptState) publish(req aggregation.DecryptRequest) (map[string][][]byte, ActPersist, error) {
	e := aggregation.NewTranscriptEntry(ts.chain.Job(), uint64(ts.chain.Len()), ts.chain.Head(), req)
	if err := ts.chain.Append(e, ts.policy); err != nil {
		return nil, ActPersist{}, err
	}
	b, err := e.MarshalBinary()
	if err != nil {
		return nil, ActPersist{}, err
	}
	seq := len(ts.encoded)
	ts.encoded = append(ts.encoded, b)
	ts.pending = seq
	out := make(map[string][][]byte, len(req.Participants))
	for _, p := range req.Participants {
		out[p] = ts.encoded[min(ts.seen[p], seq):seq]
	}
	return out, ActPersist{Transcript: &TranscriptRecord{Seq: seq, Entry: b}}, nil
}

// sign adds member's signature of the pending entry.
func (ts *transcriptState) sign(member string, key []byte, sig []byte) (ActPersist, error) {
	if ts.pending < 0 {
		return ActPersist{}, fmt.Errorf("%w: a transcript signature with no decryption in flight", ErrBadEncoding)
	}
	if err := ts.chain.AddSignature(ts.pending, member, key, sig); err != nil {
		return ActPersist{}, fmt.Errorf("%w: %w", ErrBadEncoding, err)
	}
	e, _ := ts.chain.Entry(ts.pending)
	b, err := e.MarshalBinary()
	if err != nil {
		return ActPersist{}, err
	}
	ts.encoded[ts.pending] = b
	ts.seen[member] = ts.pending + 1
	return ActPersist{Transcript: &TranscriptRecord{Seq: ts.pending, Entry: b}}, nil
}

// done marks the pending entry decrypted.
func (ts *transcriptState) done() {
	if ts.pending >= 0 {
		ts.decrypted[ts.pending] = true
	}
}

// doneAt marks entry seq decrypted: one request of a batch, whose pending
// entry is the batch's last (the one its members sign).
func (ts *transcriptState) doneAt(seq int) {
	ts.decrypted[seq] = true
}

// report lists the entries since the last report on rec, with the
// chain's head. Entries restored after a restart and not reported before
// it belonged to an attempt the restart ended: they are listed as failed
// (their decrypted status died with the old process, and a receipt must
// not claim less than may have happened).
func (ts *transcriptState) report(rec *RoundRecord) {
	for i := ts.reported; i < ts.chain.Len(); i++ {
		e, _ := ts.chain.Entry(i)
		status := StatusFailed
		if ts.decrypted[i] {
			status = StatusDecrypted
		}
		rec.Transcript = append(rec.Transcript, TranscriptDecryption{
			Seq: i, Round: int(e.Round), Attempt: int(e.Attempt), Purpose: e.Purpose, Contributors: len(e.Contributors),
			Request: hex.EncodeToString(e.Request[:]), Status: status,
		})
		if e.Gradient != ([32]byte{}) {
			rec.Transcript[len(rec.Transcript)-1].Gradient = hex.EncodeToString(e.Gradient[:])
		}
	}
	head := ts.chain.Head()
	ts.reported = ts.chain.Len()
	rec.TranscriptHead, rec.TranscriptLen = hex.EncodeToString(head[:]), ts.chain.Len()
}

// TranscriptRecord is one stored entry of the decryption transcript
// (aggregation.TranscriptEntry in binary form, with the signatures
// collected so far); a later record of the same Seq replaces it.
type TranscriptRecord struct {
	Seq   int
	Entry []byte
}

// Transcript is the coordinator's copy of the job's decryption transcript
// (nil without secure aggregation). Not safe for concurrent use with the
// engine.
func (e *Engine) Transcript() *aggregation.Transcript {
	if e.he == nil || e.he.ts == nil {
		return nil
	}
	return e.he.ts.chain
}

// TranscriptEntries returns the encoded entries of the coordinator's
// transcript (aggregation.TranscriptEntry, binary, with the signatures
// collected): what a restarted driver serves clients from.
func (e *Engine) TranscriptEntries() [][]byte {
	if e.he == nil || e.he.ts == nil {
		return nil
	}
	return slices.Clone(e.he.ts.encoded)
}

// memberKey is the identity key the committee instance lists for member.
func (h *heState) memberKey(member string) ([]byte, bool) {
	for _, m := range h.inst.Members() {
		if m.ID == member {
			return m.SigningKey, true
		}
	}
	return nil, false
}

// transcriptSignature takes the signature part of a member's answer.
func (e *Engine) transcriptSignature(ev EvShares) (ActPersist, error) {
	h := e.he
	sig, ok := ev.Parts["transcript-signature"]
	if !ok {
		return ActPersist{}, fmt.Errorf("%w: no transcript-signature part", ErrBadEncoding)
	}
	key, ok := h.memberKey(ev.Client)
	if !ok {
		return ActPersist{}, fmt.Errorf("%w: %q is not a committee member", ErrBadEncoding, ev.Client)
	}
	return h.ts.sign(ev.Client, key, sig)
}
