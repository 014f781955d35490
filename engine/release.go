package engine

import (
	"encoding/hex"
	"slices"

	"github.com/tallyfl/tally/aggregation"
)

// ActRelease reports a plaintext the coordinator obtained from a
// decryption, at the moment the shares combined: what the threat model's
// honest-but-curious coordinator can keep. The engine uses the value and
// forgets it; a driver may record it (tally coordinator --release-log) so
// that package audit can attack what a job actually released and check it
// against the decryption transcript.
type ActRelease struct{ Release Release }

func (ActRelease) action() {}

// Release is one decrypted plaintext, keyed to its transcript entry.
type Release struct {
	// Seq is the entry's position in the job's decryption transcript,
	// Entry its digest (the chain's head after it, aggregation
	// TranscriptEntry.Head) and Request the request's ID, both in hex.
	Seq     int    `json:"seq"`
	Entry   string `json:"entry"`
	Request string `json:"request"`
	Round   int    `json:"round"`
	Attempt int    `json:"attempt"`
	// Purpose is the entry's: "round", "group", "moments" or "influence".
	Purpose string `json:"purpose"`
	// Contributors are the clients whose ciphertexts were decrypted
	// (sorted, as the entry names them).
	Contributors []string `json:"contributors"`
	// Values are what was decrypted: for an aggregate, Σ nᵢxᵢ / Σ nᵢ
	// (aggregation.Assemble) and Weight the decrypted Σ nᵢ; for an
	// influence scalar, the one value aᵢ = ⟨v, nᵢΔᵢ⟩ and Weight 0.
	Values []float64 `json:"values"`
	Weight float64   `json:"weight,omitempty"`
	// Samples are the contributors' public weights nᵢ, as they claimed them.
	Samples map[string]int64 `json:"samples,omitempty"`
	// Global is, for a round or group aggregate, the model the round's
	// clients trained from, and Gradient the round's public influence
	// vector v (influence mode): public values, kept beside the release
	// so that an attacker has every input of its attack in one record.
	Global   []float64 `json:"global,omitempty"`
	Gradient []float64 `json:"gradient,omitempty"`
}

// released is the ActRelease of the decryption that just combined, the
// transcript's entry seq (the pending entry, or one request of a batch).
func (e *Engine) released(seq int, values []float64, weight float64) Action {
	h := e.he
	ent, _ := h.ts.chain.Entry(seq)
	head := ent.Head()
	r := Release{
		Seq: seq, Entry: hex.EncodeToString(head[:]), Request: hex.EncodeToString(ent.Request[:]), Round: int(ent.Round), Attempt: int(ent.Attempt),
		Purpose: ent.Purpose, Contributors: slices.Clone(ent.Contributors), Values: slices.Clone(values), Weight: weight,
	}
	if h.collect != nil && h.collect.Kind != TaskMoments {
		r.Samples = map[string]int64{}
		for _, id := range r.Contributors {
			r.Samples[id] = h.rec.Samples[id]
		}
		if ent.Purpose != aggregation.PurposeInfluence {
			r.Global = slices.Clone(e.global)
			r.Gradient = slices.Clone(h.collect.Gradient)
		}
	}
	return ActRelease{Release: r}
}
