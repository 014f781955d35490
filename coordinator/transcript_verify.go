package coordinator

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/ledger"
)

// ErrTranscriptVerify reports a state file whose decryption transcript
// does not hold, or whose receipts list decryptions the transcript does
// not have.
var ErrTranscriptVerify = errors.New("coordinator: decryption transcript does not verify")

// TranscriptReport is what VerifyTranscript found.
type TranscriptReport struct {
	Job string
	// Entries is the transcript's length; Signed those carrying every
	// participant's signature, Unsigned those carrying none (requests no
	// participant answered, and the entries of a batch of influence
	// requests before its last, whose signed head chains them).
	Entries, Signed, Unsigned int
	// Receipted is the number of entries the receipts list (each once, by
	// the round that follows them); Decrypted and Failed split them by
	// the status the receipts give.
	Receipted, Decrypted, Failed int
	// Head is the transcript's head (hex).
	Head string
}

// VerifyTranscript checks the decryption transcript a coordinator's state
// file holds (`tally ledger verify`): the entries are stored in sequence;
// they chain from the job's genesis; every signature is valid under the
// identity key the member enrolled with; the members' rules hold over the
// whole chain (k = the job's min_group_size, at most L scalars per client
// and round, L the job's valuation.scalars_per_round, which the
// coordinator refused to exceed the manifest's, or 1); and every decryption a receipt lists is the
// transcript's entry at its position, each receipt's transcript head is
// the chain's head at its length, and the receipts list every entry up to
// the last head they name. A state file without a transcript (no secure
// aggregation, or written before transcripts) reports zero entries.
func VerifyTranscript(db *ledger.DB) (TranscriptReport, error) {
	var rep TranscriptReport
	var raw [][]byte
	keys := map[string]ed25519.PublicKey{}
	k, l := 3, 1
	err := db.View(func(tx *ledger.Tx) error {
		if _, err := tx.Get(bucketState, keyJob, &rep.Job); err != nil {
			return err
		}
		var id JobIdentity
		if ok, err := tx.Get(bucketState, keyJobIdentity, &id); err != nil {
			return err
		} else if ok {
			if v, ok := id.Fields["valuation.scalars_per_round"]; ok {
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 {
					return fmt.Errorf("%w: %s: the job identity's valuation.scalars_per_round is %q", ErrTranscriptVerify, db.Path(), v)
				}
				l = n
			}
			if v, ok := id.Fields["min_group_size"]; ok {
				n, err := strconv.Atoi(v)
				if err != nil {
					return fmt.Errorf("%w: %s: the job identity's min_group_size is %q", ErrTranscriptVerify, db.Path(), v)
				}
				k = n
			}
		}
		if err := tx.ForEachPrefix(bucketAuth, "key/", func(name string, v []byte) error {
			var b Binding
			if err := jsonUnmarshal(v, &b); err != nil {
				return fmt.Errorf("%w: %s: enrolment %s: %v", ErrTranscriptVerify, db.Path(), name, err)
			}
			keys[b.Client] = b.Key
			return nil
		}); err != nil {
			return err
		}
		return tx.ForEach(bucketTranscript, func(name string, v []byte) error {
			if want := fmt.Sprintf(transcriptKey, len(raw)); name != want {
				return fmt.Errorf("%w: %s: transcript entry %q where %q belongs", ErrTranscriptVerify, db.Path(), name, want)
			}
			raw = append(raw, append([]byte(nil), v...))
			return nil
		})
	})
	if err != nil {
		return rep, err
	}
	entries := make([]aggregation.TranscriptEntry, len(raw))
	for i, b := range raw {
		if err := entries[i].UnmarshalBinary(b); err != nil {
			return rep, fmt.Errorf("%w: %s: transcript entry %d: %w", ErrTranscriptVerify, db.Path(), i, err)
		}
		switch len(entries[i].Signatures) {
		case 0:
			rep.Unsigned++
		case len(entries[i].Participants):
			rep.Signed++
		}
	}
	rep.Entries = len(entries)
	policy, err := aggregation.NewPolicy(aggregation.PolicyConfig{MinContributors: k, MaxScalarsPerRound: l})
	if err != nil {
		return rep, fmt.Errorf("%w: %s: %w", ErrTranscriptVerify, db.Path(), err)
	}
	chain, err := aggregation.VerifyTranscript(rep.Job, entries, policy, func(id string) (ed25519.PublicKey, bool) {
		key, ok := keys[id]
		return key, ok
	})
	if err != nil {
		return rep, fmt.Errorf("%w: %s: %w", ErrTranscriptVerify, db.Path(), err)
	}
	head := chain.Head()
	rep.Head = hex.EncodeToString(head[:])

	rs, err := db.Receipts(ledger.Filter{Job: rep.Job})
	if err != nil {
		return rep, err
	}
	listed := map[uint64]string{}
	var lastLen uint64
	for _, r := range rs {
		if r.TranscriptHead == "" {
			continue
		}
		e, ok := chain.Entry(int(r.TranscriptLen) - 1)
		if h := e.Head(); !ok || hex.EncodeToString(h[:]) != r.TranscriptHead {
			return rep, fmt.Errorf("%w: %s: receipt seq %d (round %d, client %s) names head %s at %d entries, which is not the transcript's", ErrTranscriptVerify, db.Path(), r.Seq, r.Round, r.Client, r.TranscriptHead, r.TranscriptLen)
		}
		lastLen = max(lastLen, r.TranscriptLen)
		for i, d := range r.Decrypted {
			if d.Status == "" {
				continue
			}
			e, ok := chain.Entry(int(d.Seq))
			if !ok || hex.EncodeToString(e.Request[:]) != d.Request || int(e.Round) != d.Round || int(e.Attempt) != d.Attempt ||
				e.Purpose != d.Purpose || len(e.Contributors) != d.Contributors || entryGradient(e) != d.Gradient {
				return rep, fmt.Errorf("%w: %s: receipt seq %d (round %d, client %s) decryption %d (%s, round %d attempt %d) is not transcript entry %d", ErrTranscriptVerify, db.Path(), r.Seq, r.Round, r.Client, i, d.Purpose, d.Round, d.Attempt, d.Seq)
			}
			if s, seen := listed[d.Seq]; seen && s != d.Status {
				return rep, fmt.Errorf("%w: %s: transcript entry %d is %s in one receipt and %s in another", ErrTranscriptVerify, db.Path(), d.Seq, s, d.Status)
			}
			listed[d.Seq] = d.Status
		}
	}
	for i := uint64(0); i < lastLen; i++ {
		s, ok := listed[i]
		if !ok {
			e, _ := chain.Entry(int(i))
			return rep, fmt.Errorf("%w: %s: transcript entry %d (round %d attempt %d, %s) is in no receipt, though receipts name the head after it", ErrTranscriptVerify, db.Path(), i, e.Round, e.Attempt, e.Purpose)
		}
		rep.Receipted++
		if s == ledger.StatusDecrypted {
			rep.Decrypted++
		} else {
			rep.Failed++
		}
	}
	return rep, nil
}

// entryGradient is the hex digest of the multiplier vector a transcript
// entry commits to, as the receipts list it ("" for none).
func entryGradient(e aggregation.TranscriptEntry) string {
	if e.Gradient == ([32]byte{}) {
		return ""
	}
	return hex.EncodeToString(e.Gradient[:])
}
