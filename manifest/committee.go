package manifest

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
)

// ErrCommittee: a committee is not the one the manifest's rule draws.
var ErrCommittee = errors.New("manifest: committee contradicts the manifest")

// committeeTag separates committee scores from other hashes of the seed.
const committeeTag = "tally committee v1"

// Score is id's committee score in epoch: SHA-256(tag ‖ seed ‖ epoch ‖ id),
// length-prefixed. Lower scores are drawn first.
func Score(seed []byte, epoch uint64, id string) [32]byte {
	h := sha256.New()
	var b []byte
	for _, f := range [][]byte{[]byte(committeeTag), seed, binary.BigEndian.AppendUint64(nil, epoch), []byte(id)} {
		b = binary.BigEndian.AppendUint32(b[:0], uint32(len(f)))
		h.Write(b)
		h.Write(f)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// DrawCommittee draws the size candidates with the lowest scores in epoch
// (all of them if there are fewer), returned in the candidates' order. It
// is a function of (seed, epoch, candidate ids) alone, so a client
// recomputes it.
func DrawCommittee(seed []byte, epoch uint64, candidates []string, size int) []string {
	type scored struct {
		id string
		s  [32]byte
	}
	all := make([]scored, len(candidates))
	for i, id := range candidates {
		all[i] = scored{id, Score(seed, epoch, id)}
	}
	sort.Slice(all, func(i, j int) bool { return string(all[i].s[:]) < string(all[j].s[:]) })
	drawn := map[string]bool{}
	for _, c := range all[:min(size, len(all))] {
		drawn[c.id] = true
	}
	var out []string
	for _, id := range candidates {
		if drawn[id] {
			out = append(out, id)
		}
	}
	return out
}

// CheckCommittee checks a committee a client was shown for key-generation
// epoch: its threshold is the manifest's, its size the manifest's or, when
// too few participants are present, smaller but at least the threshold
// (fewer than t colluders still learn nothing, whatever c is), every
// member is a participant, and the members are the ones the rule draws from the
// participants the coordinator treated as present. The coordinator does not
// say who was absent, so absent means every participant that scores lower
// than the highest-scoring member and is not a member: that is the
// influence the package documentation names, and it is returned so that
// a client can log it.
func (m *Manifest) CheckCommittee(epoch uint64, members []string, threshold int) (absent []string, err error) {
	c := m.Committee
	if len(members) > c.Size || len(members) < c.Threshold {
		return nil, fmt.Errorf("%w: epoch %d: committee of %d members, the manifest says %d (at least the threshold %d when participants are absent)", ErrCommittee, epoch, len(members), c.Size, c.Threshold)
	}
	if threshold != c.Threshold {
		return nil, fmt.Errorf("%w: epoch %d: threshold %d, the manifest says %d", ErrCommittee, epoch, threshold, c.Threshold)
	}
	var worst [32]byte
	for _, id := range members {
		if _, ok := m.IdentityKey(id); !ok {
			return nil, fmt.Errorf("%w: epoch %d: member %q is not a participant of the manifest", ErrCommittee, epoch, id)
		}
		if s := Score(c.Seed, epoch, id); string(s[:]) > string(worst[:]) {
			worst = s
		}
	}
	for _, p := range m.Participants {
		if slices.Contains(members, p.ID) {
			continue
		}
		if s := Score(c.Seed, epoch, p.ID); string(s[:]) < string(worst[:]) {
			absent = append(absent, p.ID)
		}
	}
	sort.Strings(absent)
	return absent, nil
}
