package aggregation

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
)

// Limits on decryption requests, so that decoding one cannot allocate
// without bound: 2^16 blocks is 2^30 parameters with the default set.
const (
	maxBlocks       = 1 << 16
	maxContributors = 1 << 16
	maxPurposeLen   = 64
)

// DecryptRequest asks committee members for decryption shares of one
// aggregate. Its ID is the content hash of its canonical form (docs/STYLE.md §4):
// a retry with other participants is a new request, and since members
// never serve a digest twice it needs a fresh aggregate (see
// [Encryptor.RerandomizeAggregate] and Retry).
type DecryptRequest struct {
	// Key is the key-generation instance the aggregate is encrypted under.
	Key [32]byte
	// Purpose says what is decrypted ("total", "group", ...); it is
	// recorded by members and in the ledger.
	Purpose string
	// Round is the training round.
	Round uint64
	// Attempt is the round's attempt (1 for the first); a retried round
	// keeps its round and takes the next attempt.
	Attempt uint64
	// Digests are the SHA-256 digests of the aggregate's block ciphertexts,
	// in block order ([Aggregate.Digests]).
	Digests [][32]byte
	// Contributors are the clients whose updates the aggregate sums.
	Contributors []string
	// Participants are exactly t committee members whose shares will be
	// combined: each member weights its share with Lagrange coefficients
	// for this set, so shares for different sets do not mix.
	Participants []string
	// Retry counts the public encryptions of zero added to the sum of the
	// contributors' ciphertexts ([Encryptor.RerandomizeAggregate]); 0 is
	// the plain sum. Members recompute that zero when they check the sum.
	Retry uint32
	// Gradient is the digest ([GradientDigest]) of the multiplier vector
	// of an influence request, sent to members in the clear; zero
	// otherwise.
	Gradient [32]byte
	// C1 are the digests of the c₁ half of each block ciphertext
	// ([C1Digest]), in block order, for a whole decryption; the transcript
	// records them, so that one c₁ is decrypted once, by one participant
	// set, over the whole job, whatever c₀ it comes with (doc.go, "What
	// members check"). [Member.VerifyAggregate] refuses a whole request
	// without them or whose ciphertexts' c₁ hash otherwise. Empty for an
	// influence request, whose c₁ is fixed by its client's signed
	// ciphertexts and its committed vector (the transcript's rules over
	// Gradient cover it).
	C1 [][32]byte
}

// NewDecryptRequest builds the canonical request for agg with the given
// participants (any order).
func NewDecryptRequest(agg *Aggregate, purpose string, round uint64, participants []string) DecryptRequest {
	return DecryptRequest{
		Key:          agg.Key,
		Purpose:      purpose,
		Round:        round,
		Digests:      agg.Digests,
		Contributors: agg.Contributors,
		Participants: participants,
		C1:           c1Digests(agg.Ciphertexts),
	}.Canonical()
}

// c1Digests are the [C1Digest]s of cts; nil if any is too short to be a
// ciphertext (the member's checks name the problem).
func c1Digests(cts [][]byte) [][32]byte {
	if len(cts) == 0 {
		return nil
	}
	out := make([][32]byte, len(cts))
	for i, ct := range cts {
		if len(ct) <= ciphertextHeaderSize {
			return nil
		}
		out[i] = C1Digest(ct)
	}
	return out
}

// validate checks the shape of the request (not the policy): sizes, and
// that contributors and participants are sorted without duplicates, which
// makes the encoding canonical.
func (r DecryptRequest) validate() error {
	if len(r.Purpose) == 0 || len(r.Purpose) > maxPurposeLen {
		return fmt.Errorf("%w: purpose must have 1 to %d bytes", ErrInvalidInput, maxPurposeLen)
	}
	if len(r.Digests) == 0 || len(r.Digests) > maxBlocks {
		return fmt.Errorf("%w: %d digests", ErrInvalidInput, len(r.Digests))
	}
	if len(r.C1) != 0 && len(r.C1) != len(r.Digests) {
		return fmt.Errorf("%w: %d c1 digests for %d blocks", ErrInvalidInput, len(r.C1), len(r.Digests))
	}
	check := func(what string, ids []string, max int) error {
		if len(ids) == 0 || len(ids) > max {
			return fmt.Errorf("%w: %d %s", ErrInvalidInput, len(ids), what)
		}
		for i, id := range ids {
			if id == "" || len(id) > maxIDLength {
				return fmt.Errorf("%w: %s %d: id must have 1 to %d bytes", ErrInvalidInput, what, i, maxIDLength)
			}
			if i > 0 && ids[i-1] >= id {
				return fmt.Errorf("%w: %s must be sorted without duplicates (%q after %q)", ErrInvalidInput, what, id, ids[i-1])
			}
		}
		return nil
	}
	if err := check("contributors", r.Contributors, maxContributors); err != nil {
		return err
	}
	return check("participants", r.Participants, maxMembers)
}

// Canonical returns a copy with contributors and participants sorted
// (duplicates are left for validation to reject).
func (r DecryptRequest) Canonical() DecryptRequest {
	r.Digests = slices.Clone(r.Digests)
	r.C1 = slices.Clone(r.C1)
	r.Contributors = slices.Clone(r.Contributors)
	r.Participants = slices.Clone(r.Participants)
	slices.Sort(r.Contributors)
	slices.Sort(r.Participants)
	return r
}

func (r DecryptRequest) encode(prefix []byte) []byte {
	b := append([]byte(nil), prefix...)
	b = append(b, r.Key[:]...)
	b = appendBytes(b, []byte(r.Purpose))
	b = binary.BigEndian.AppendUint64(b, r.Round)
	b = binary.BigEndian.AppendUint64(b, r.Attempt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.Digests)))
	for _, d := range r.Digests {
		b = append(b, d[:]...)
	}
	for _, ids := range [][]string{r.Contributors, r.Participants} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(ids)))
		for _, id := range ids {
			b = appendBytes(b, []byte(id))
		}
	}
	b = binary.BigEndian.AppendUint32(b, r.Retry)
	b = append(b, r.Gradient[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.C1)))
	for _, d := range r.C1 {
		b = append(b, d[:]...)
	}
	return b
}

var requestMagic = []byte{'T', 'A', 'D', 'R', wireVersion}

// ID is the SHA-256 of the canonical encoding.
func (r DecryptRequest) ID() [32]byte {
	return sha256.Sum256(r.Canonical().encode([]byte("tally/aggregation/decrypt/v1")))
}

// MarshalBinary encodes the request after validating it.
func (r DecryptRequest) MarshalBinary() ([]byte, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	return r.encode(requestMagic), nil
}

// UnmarshalBinary decodes and validates a request.
func (r *DecryptRequest) UnmarshalBinary(b []byte) error {
	rd := reader{b: b}
	if !bytes.Equal(rd.take(len(requestMagic)), requestMagic) {
		return fmt.Errorf("%w: decryption request: bad magic or version", ErrMalformed)
	}
	var out DecryptRequest
	copy(out.Key[:], rd.take(32))
	out.Purpose = string(rd.bytes(maxPurposeLen))
	out.Round = rd.u64()
	out.Attempt = rd.u64()
	n := rd.u32()
	if rd.err == nil && (n > maxBlocks || int64(n)*32 > int64(len(rd.b))) {
		return fmt.Errorf("%w: decryption request: %d digests", ErrMalformed, n)
	}
	for i := uint32(0); i < n && rd.err == nil; i++ {
		var d [32]byte
		copy(d[:], rd.take(32))
		out.Digests = append(out.Digests, d)
	}
	for k, max := range []int{maxContributors, maxMembers} {
		n := rd.u32()
		if rd.err == nil && (int64(n) > int64(max) || int64(n)*4 > int64(len(rd.b))) {
			return fmt.Errorf("%w: decryption request: %d ids", ErrMalformed, n)
		}
		ids := make([]string, 0, n)
		for i := uint32(0); i < n && rd.err == nil; i++ {
			ids = append(ids, string(rd.bytes(maxIDLength)))
		}
		if k == 0 {
			out.Contributors = ids
		} else {
			out.Participants = ids
		}
	}
	out.Retry = rd.u32()
	copy(out.Gradient[:], rd.take(32))
	n = rd.u32()
	if rd.err == nil && (n > maxBlocks || int64(n)*32 > int64(len(rd.b))) {
		return fmt.Errorf("%w: decryption request: %d c1 digests", ErrMalformed, n)
	}
	for i := uint32(0); i < n && rd.err == nil; i++ {
		var d [32]byte
		copy(d[:], rd.take(32))
		out.C1 = append(out.C1, d)
	}
	if rd.err != nil {
		return fmt.Errorf("%w: decryption request: %v", ErrMalformed, rd.err)
	}
	if len(rd.b) != 0 {
		return fmt.Errorf("%w: decryption request: %d trailing bytes", ErrMalformed, len(rd.b))
	}
	if err := out.validate(); err != nil {
		return fmt.Errorf("%w: decryption request: %w", ErrMalformed, err)
	}
	*r = out
	return nil
}
