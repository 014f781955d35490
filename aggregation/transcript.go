package aggregation

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
)

// The decryption transcript (doc.go, "Threat model"): a hash chain with one
// entry per decryption request of a job, which the request's participants
// sign when they answer and which every member keeps, persists and checks
// before it answers anything. The rules a member applies to a request are
// applied to the whole chain, so they hold job-wide — across attempts,
// re-keys (a new committee receives the chain from genesis) and member
// restarts (the client persists it) — and not only over what one member
// happened to serve.

const (
	domainTranscript     = "tally/aggregation/transcript/v1"
	domainTranscriptHead = "tally/aggregation/transcript-head/v1"
	domainGenesis        = "tally/aggregation/transcript-genesis/v1"
	// maxTranscriptEntries bounds a decoded transcript: 2^24 entries is
	// far beyond the flooding bound's decryptions and scalars.
	maxTranscriptEntries = 1 << 24
)

var (
	entryMagic      = []byte{'T', 'A', 'T', 'E', wireVersion}
	transcriptMagic = []byte{'T', 'A', 'T', 'R', wireVersion}
)

// TranscriptEntry is one decryption request as the transcript records it.
// Its head ([TranscriptEntry.Head]) hashes every field but the signatures
// and chains to the previous head; each participant that answered signs
// the head with its Ed25519 identity key ([TranscriptEntry.Signatures]).
type TranscriptEntry struct {
	// Seq is the entry's position in the chain, from 0.
	Seq uint64
	// Prev is the head of the chain before this entry ([GenesisHead] for
	// the first).
	Prev [32]byte
	// Job is the job the chain belongs to.
	Job string
	// Key is the key-generation instance the request was made under.
	Key [32]byte
	// Round and Attempt are the request's round and attempt.
	Round, Attempt uint64
	// Purpose is the request's purpose ([PurposeInfluence] for a
	// coefficient request).
	Purpose string
	// Request is the request's ID.
	Request [32]byte
	// Digests are the ciphertext digests the request names.
	Digests [][32]byte
	// Contributors and Participants are the request's, sorted.
	Contributors, Participants []string
	// Scalars is the number of scalars a coefficient request releases
	// per contributor (1), zero for a whole decryption.
	Scalars uint32
	// Gradient is the request's committed multiplier vector digest
	// ([GradientDigest]) of a coefficient request, zero otherwise.
	Gradient [32]byte
	// C1 are the request's c₁ digests ([DecryptRequest.C1]), which every
	// participant checked against the ciphertexts it was given
	// ([Member.VerifyAggregate]) before it produced a share.
	C1 [][32]byte
	// Signatures maps each participant that signed to its signature of
	// the head (domain-separated, see [TranscriptEntry.Verify]).
	Signatures map[string][]byte
}

// GenesisHead is the head of job's empty transcript.
func GenesisHead(job string) [32]byte {
	return sha256.Sum256(appendBytes([]byte(domainGenesis), []byte(job)))
}

// NewTranscriptEntry is the entry req makes at position seq after head
// prev of job's chain.
func NewTranscriptEntry(job string, seq uint64, prev [32]byte, req DecryptRequest) TranscriptEntry {
	req = req.Canonical()
	e := TranscriptEntry{
		Seq: seq, Prev: prev, Job: job, Key: req.Key, Round: req.Round, Attempt: req.Attempt,
		Purpose: req.Purpose, Request: req.ID(), Digests: req.Digests,
		Contributors: req.Contributors, Participants: req.Participants,
		Gradient: req.Gradient, C1: req.C1,
	}
	if req.Purpose == PurposeInfluence {
		e.Scalars = 1
	}
	return e
}

func (e *TranscriptEntry) encode(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, e.Seq)
	b = append(b, e.Prev[:]...)
	b = appendBytes(b, []byte(e.Job))
	b = append(b, e.Key[:]...)
	b = binary.BigEndian.AppendUint64(b, e.Round)
	b = binary.BigEndian.AppendUint64(b, e.Attempt)
	b = appendBytes(b, []byte(e.Purpose))
	b = append(b, e.Request[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(e.Digests)))
	for _, d := range e.Digests {
		b = append(b, d[:]...)
	}
	for _, ids := range [][]string{e.Contributors, e.Participants} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(ids)))
		for _, id := range ids {
			b = appendBytes(b, []byte(id))
		}
	}
	b = binary.BigEndian.AppendUint32(b, e.Scalars)
	b = append(b, e.Gradient[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(e.C1)))
	for _, d := range e.C1 {
		b = append(b, d[:]...)
	}
	return b
}

// Head is the chain's head after this entry: SHA-256 over the entry's
// canonical encoding (which includes the previous head), signatures
// excluded.
func (e *TranscriptEntry) Head() [32]byte {
	return sha256.Sum256(e.encode([]byte(domainTranscript)))
}

func headMessage(head [32]byte) []byte {
	return append([]byte(domainTranscriptHead), head[:]...)
}

// SignTranscriptHead is a member's signature of head.
func SignTranscriptHead(signer ed25519.PrivateKey, head [32]byte) []byte {
	return ed25519.Sign(signer, headMessage(head))
}

// Verify checks the entry's signatures: each from one of its
// participants, each valid under the key keys gives for it. keys returns
// false for a member whose key it does not know; such a signature is an
// error unless unknownOK (the caller has no pinned keys, and the
// coordinator vouches for identities anyway).
//
// An entry may carry no signature at all: a request the coordinator
// published that no participant answered (dead members, a coordinator
// restart before any answer). Accepting it cannot loosen anything, since
// an entry only adds to what the rules forbid; refusing it would strand
// every member the coordinator must show it to. What the signatures give
// is attribution — a participant cannot deny an entry it signed, and two
// signed heads at one position prove the coordinator forked the chain —
// while fork resistance rests on each member's own entries (doc.go).
func (e *TranscriptEntry) Verify(keys func(id string) (ed25519.PublicKey, bool), unknownOK bool) error {
	head := e.Head()
	for id, sig := range e.Signatures {
		if _, ok := slices.BinarySearch(e.Participants, id); !ok {
			return fmt.Errorf("%w: entry %d is signed by %q, not one of its participants %q", ErrTranscript, e.Seq, id, e.Participants)
		}
		key, ok := keys(id)
		if !ok {
			if unknownOK && len(sig) == ed25519.SignatureSize {
				continue
			}
			return fmt.Errorf("%w: entry %d: no identity key is known for its signer %q", ErrTranscript, e.Seq, id)
		}
		if !ed25519.Verify(key, headMessage(head), sig) {
			return fmt.Errorf("%w: entry %d: the signature of %q is not valid for head %x under its identity key", ErrTranscript, e.Seq, id, head[:8])
		}
	}
	return nil
}

// MarshalBinary encodes the entry with its signatures (sorted by member).
func (e TranscriptEntry) MarshalBinary() ([]byte, error) {
	if err := e.validate(); err != nil {
		return nil, err
	}
	b := e.encode(append([]byte(nil), entryMagic...))
	ids := make([]string, 0, len(e.Signatures))
	for id := range e.Signatures {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	b = binary.BigEndian.AppendUint32(b, uint32(len(ids)))
	for _, id := range ids {
		b = appendBytes(b, []byte(id))
		b = appendBytes(b, e.Signatures[id])
	}
	return b, nil
}

// UnmarshalBinary decodes and validates the shape of an entry (not its
// signatures nor its place in a chain).
func (e *TranscriptEntry) UnmarshalBinary(b []byte) error {
	rd := reader{b: b}
	if !bytes.Equal(rd.take(len(entryMagic)), entryMagic) {
		return fmt.Errorf("%w: transcript entry: bad magic or version", ErrMalformed)
	}
	var out TranscriptEntry
	out.Seq = rd.u64()
	copy(out.Prev[:], rd.take(32))
	out.Job = string(rd.bytes(maxIDLength))
	copy(out.Key[:], rd.take(32))
	out.Round = rd.u64()
	out.Attempt = rd.u64()
	out.Purpose = string(rd.bytes(maxPurposeLen))
	copy(out.Request[:], rd.take(32))
	n := rd.u32()
	if rd.err == nil && (n > maxBlocks || int64(n)*32 > int64(len(rd.b))) {
		return fmt.Errorf("%w: transcript entry: %d digests", ErrMalformed, n)
	}
	for i := uint32(0); i < n && rd.err == nil; i++ {
		var d [32]byte
		copy(d[:], rd.take(32))
		out.Digests = append(out.Digests, d)
	}
	for k, max := range []int{maxContributors, maxMembers} {
		n := rd.u32()
		if rd.err == nil && (int64(n) > int64(max) || int64(n)*4 > int64(len(rd.b))) {
			return fmt.Errorf("%w: transcript entry: %d ids", ErrMalformed, n)
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
	out.Scalars = rd.u32()
	copy(out.Gradient[:], rd.take(32))
	n = rd.u32()
	if rd.err == nil && (n > maxBlocks || int64(n)*32 > int64(len(rd.b))) {
		return fmt.Errorf("%w: transcript entry: %d c1 digests", ErrMalformed, n)
	}
	for i := uint32(0); i < n && rd.err == nil; i++ {
		var d [32]byte
		copy(d[:], rd.take(32))
		out.C1 = append(out.C1, d)
	}
	ns := rd.u32()
	if rd.err == nil && int64(ns) > maxMembers {
		return fmt.Errorf("%w: transcript entry: %d signatures", ErrMalformed, ns)
	}
	out.Signatures = make(map[string][]byte, ns)
	for i := uint32(0); i < ns && rd.err == nil; i++ {
		id := string(rd.bytes(maxIDLength))
		sig := rd.bytes(ed25519.SignatureSize)
		if rd.err == nil && len(sig) != ed25519.SignatureSize {
			return fmt.Errorf("%w: transcript entry: signature of %q has %d bytes", ErrMalformed, id, len(sig))
		}
		if _, dup := out.Signatures[id]; dup {
			return fmt.Errorf("%w: transcript entry: two signatures of %q", ErrMalformed, id)
		}
		out.Signatures[id] = sig
	}
	if rd.err != nil {
		return fmt.Errorf("%w: transcript entry: %v", ErrMalformed, rd.err)
	}
	if len(rd.b) != 0 {
		return fmt.Errorf("%w: transcript entry: %d trailing bytes", ErrMalformed, len(rd.b))
	}
	if err := out.validate(); err != nil {
		return fmt.Errorf("%w: transcript entry: %w", ErrMalformed, err)
	}
	*e = out
	return nil
}

// validate checks the entry's shape: a request's shape, and one scalar for
// an influence entry, none otherwise.
func (e *TranscriptEntry) validate() error {
	if e.Job == "" || len(e.Job) > maxIDLength {
		return fmt.Errorf("%w: transcript entry %d: job must have 1 to %d bytes", ErrInvalidInput, e.Seq, maxIDLength)
	}
	req := DecryptRequest{Key: e.Key, Purpose: e.Purpose, Round: e.Round, Attempt: e.Attempt, Digests: e.Digests, Contributors: e.Contributors, Participants: e.Participants, C1: e.C1}
	if err := req.validate(); err != nil {
		return fmt.Errorf("transcript entry %d: %w", e.Seq, err)
	}
	if want := uint32(0); e.Purpose == PurposeInfluence && e.Scalars != 1 || e.Purpose != PurposeInfluence && e.Scalars != want {
		return fmt.Errorf("%w: transcript entry %d: %d scalars for purpose %q", ErrInvalidInput, e.Seq, e.Scalars, e.Purpose)
	}
	return nil
}

// Transcript is a job's decryption transcript as one party holds it: the
// entries it accepted, in order, with indexes for the rules. Not safe for
// concurrent use; [Member] serialises its own.
type Transcript struct {
	job     string
	entries []TranscriptEntry
	head    [32]byte
	// Indexes over the whole chain, for the rules.
	digests  map[[32]byte]int      // digest → entry
	requests map[[32]byte]int      // request ID → entry
	sets     map[uint64][][]string // round → contributor sets decrypted whole
	scalars  map[scalarKey]uint32  // (round, client) → scalars released
	c1       map[[32]byte]int      // c₁ digest → entry
	vectors  map[uint64][][32]byte // round → distinct multiplier vectors
	products map[productKey]int    // (round, client, vector) → entry
	maxRound uint64
}

type productKey struct {
	round  uint64
	client string
	vector [32]byte
}

type scalarKey struct {
	round  uint64
	client string
}

// NewTranscript returns job's empty transcript.
func NewTranscript(job string) *Transcript {
	return &Transcript{
		job: job, head: GenesisHead(job),
		digests: map[[32]byte]int{}, requests: map[[32]byte]int{},
		sets: map[uint64][][]string{}, scalars: map[scalarKey]uint32{},
		c1: map[[32]byte]int{}, vectors: map[uint64][][32]byte{}, products: map[productKey]int{},
	}
}

// Job is the job the transcript belongs to.
func (t *Transcript) Job() string { return t.job }

// Head is the head after the last entry ([GenesisHead] when empty).
func (t *Transcript) Head() [32]byte { return t.head }

// Len is the number of entries.
func (t *Transcript) Len() int { return len(t.entries) }

// Entries returns the entries from position from on (shared, not copied:
// the caller must not modify them).
func (t *Transcript) Entries(from int) []TranscriptEntry {
	if from >= len(t.entries) {
		return nil
	}
	return t.entries[max(from, 0):]
}

// Entry returns the entry at seq.
func (t *Transcript) Entry(seq int) (TranscriptEntry, bool) {
	if seq < 0 || seq >= len(t.entries) {
		return TranscriptEntry{}, false
	}
	return t.entries[seq], true
}

// FindRequest returns the entry recording request id.
func (t *Transcript) FindRequest(id [32]byte) (TranscriptEntry, bool) {
	i, ok := t.requests[id]
	if !ok {
		return TranscriptEntry{}, false
	}
	return t.entries[i], true
}

// Check applies the rules to e as the next entry of the chain, under
// policy p, without appending it:
//
//   - it extends the chain: e.Seq is the chain's length and e.Prev its head
//     (else [ErrTranscriptFork]), and it belongs to the chain's job;
//   - rounds never go back ([ErrStaleRound]): a request is for the latest
//     round in the chain or a later one, so no scalar is ever released for
//     an old round and a relabelled round burns a round of the job;
//   - a digest appears in one entry only ([ErrAlreadyServed]): a
//     ciphertext is decrypted once, by one participant set;
//   - a whole decryption has at least k contributors, and its contributor
//     set S and every set T decrypted whole in the same round — retried
//     attempts and other key instances included — satisfy |S∖T| ∈ {0} ∪
//     [k, ∞) and |T∖S| ∈ {0} ∪ [k, ∞), which implies 0 < |S Δ T| < k never
//     happens ([ErrSetDifference]): decrypting S and S∖{i} would reveal
//     client i's update by subtraction;
//   - a c₁ digest appears in one entry only ([ErrAlreadyServed]): the same
//     c₁ under another c₀ has another digest, and two shares of one c₁ for
//     two participant sets give a member's key share (doc.go);
//   - a coefficient request adds its scalars to its client's count for
//     the round, at most p.MaxScalarsPerRound ([ErrScalarBudget]); the
//     round has at most that many distinct committed multiplier vectors
//     ([ErrGradientMismatch]), and a client's product with one of them is
//     decrypted once ([ErrAlreadyServed]), since it fixes the c₁.
//
// Rule violations wrap [ErrPolicy] too.
func (t *Transcript) Check(e *TranscriptEntry, p Policy) error {
	if e.Job != t.job {
		return fmt.Errorf("%w: entry %d is for job %q, the transcript is job %q's", ErrTranscript, e.Seq, e.Job, t.job)
	}
	if e.Seq != uint64(len(t.entries)) || e.Prev != t.head {
		return fmt.Errorf("%w: entry %d after head %x does not extend the chain at %d entries, head %x", ErrTranscriptFork, e.Seq, e.Prev[:8], len(t.entries), t.head[:8])
	}
	if err := e.validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrTranscript, err)
	}
	if len(t.entries) > 0 && e.Round < t.maxRound {
		return fmt.Errorf("%w: %w: a request for round %d after round %d was decrypted; rounds never go back", ErrPolicy, ErrStaleRound, e.Round, t.maxRound)
	}
	for i, d := range e.Digests {
		if j, ok := t.digests[d]; ok {
			o := &t.entries[j]
			return fmt.Errorf("%w: %w: digest %x (block %d) was decrypted in entry %d (round %d attempt %d, %s, participants %q); now asked of participants %q",
				ErrPolicy, ErrAlreadyServed, d[:8], i, o.Seq, o.Round, o.Attempt, o.Purpose, o.Participants, e.Participants)
		}
		if slices.Contains(e.Digests[:i], d) {
			return fmt.Errorf("%w: %w: digest %x named twice in one request", ErrPolicy, ErrAlreadyServed, d[:8])
		}
	}
	for i, d := range e.C1 {
		if j, ok := t.c1[d]; ok {
			o := &t.entries[j]
			return fmt.Errorf("%w: %w: the c1 of block %d (c1 digest %x) was decrypted in entry %d (round %d attempt %d, %s, participants %q) under another c0; now asked of participants %q",
				ErrPolicy, ErrAlreadyServed, i, d[:8], o.Seq, o.Round, o.Attempt, o.Purpose, o.Participants, e.Participants)
		}
		if slices.Contains(e.C1[:i], d) {
			return fmt.Errorf("%w: %w: c1 digest %x named twice in one request", ErrPolicy, ErrAlreadyServed, d[:8])
		}
	}
	if e.Purpose == PurposeInfluence {
		sk := scalarKey{e.Round, e.Contributors[0]}
		if n, limit := t.scalars[sk]+e.Scalars, uint32(p.MaxScalarsPerRound()); n > limit {
			return fmt.Errorf("%w: %w: client %q, round %d: %d influence scalars already released (any attempt, key or participants), at most %d per client and round (security.max_scalars_per_client_round)",
				ErrPolicy, ErrScalarBudget, e.Contributors[0], e.Round, t.scalars[sk], limit)
		}
		if e.Gradient != ([32]byte{}) {
			pk := productKey{e.Round, e.Contributors[0], e.Gradient}
			if j, ok := t.products[pk]; ok {
				return fmt.Errorf("%w: %w: client %q, round %d: its product with vector %x was decrypted in entry %d already",
					ErrPolicy, ErrAlreadyServed, e.Contributors[0], e.Round, e.Gradient[:8], j)
			}
			if vs := t.vectors[e.Round]; !slices.Contains(vs, e.Gradient) && len(vs) >= p.MaxScalarsPerRound() {
				return fmt.Errorf("%w: %w: round %d already has %d committed multiplier vectors, at most %d per round (security.max_scalars_per_client_round); vector %x is another",
					ErrPolicy, ErrGradientMismatch, e.Round, len(vs), p.MaxScalarsPerRound(), e.Gradient[:8])
			}
		}
		return nil
	}
	k := p.MinContributors()
	if len(e.Contributors) < k {
		return fmt.Errorf("%w: %d contributors, at least %d required", ErrPolicy, len(e.Contributors), k)
	}
	for _, set := range t.sets[e.Round] {
		onlyNew, onlyOld := setDiff(e.Contributors, set), setDiff(set, e.Contributors)
		if (onlyNew > 0 && onlyNew < k) || (onlyOld > 0 && onlyOld < k) {
			return fmt.Errorf("%w: %w: round %d attempt %d: contributors differ by %d/%d clients from a set already decrypted in round %d (any attempt or key instance); fewer than k = %d would expose updates by subtraction",
				ErrPolicy, ErrSetDifference, e.Round, e.Attempt, onlyNew, onlyOld, e.Round, k)
		}
	}
	return nil
}

// add appends e, which [Transcript.Check] accepted, and indexes it.
func (t *Transcript) add(e TranscriptEntry) {
	i := len(t.entries)
	t.entries = append(t.entries, e)
	t.head = e.Head()
	t.maxRound = max(t.maxRound, e.Round)
	t.requests[e.Request] = i
	for _, d := range e.Digests {
		t.digests[d] = i
	}
	for _, d := range e.C1 {
		t.c1[d] = i
	}
	if e.Purpose == PurposeInfluence {
		t.scalars[scalarKey{e.Round, e.Contributors[0]}] += e.Scalars
		if e.Gradient != ([32]byte{}) {
			t.products[productKey{e.Round, e.Contributors[0], e.Gradient}] = i
			if !slices.Contains(t.vectors[e.Round], e.Gradient) {
				t.vectors[e.Round] = append(t.vectors[e.Round], e.Gradient)
			}
		}
		return
	}
	for _, set := range t.sets[e.Round] {
		if slices.Equal(set, e.Contributors) {
			return
		}
	}
	t.sets[e.Round] = append(t.sets[e.Round], e.Contributors)
}

// Append checks e ([Transcript.Check]) and appends it.
func (t *Transcript) Append(e TranscriptEntry, p Policy) error {
	if err := t.Check(&e, p); err != nil {
		return err
	}
	t.add(e)
	return nil
}

// Extend takes entries that continue this party's chain — the coordinator
// sends what was added since this party's last head, and may resend older
// ones — and appends the new ones after verifying each: an entry at a
// position already held must be the very entry held (same head), else the
// chain was forked ([ErrTranscriptFork]); new entries follow without a gap,
// their signatures valid ([TranscriptEntry.Verify]) and each passing
// the rules ([Transcript.Check]) against everything before it. An entry
// that breaks a rule is refused with [ErrTranscript] as well: members that
// signed it deviated. Entries accepted before an error stay appended.
func (t *Transcript) Extend(entries []TranscriptEntry, p Policy, keys func(id string) (ed25519.PublicKey, bool), unknownOK bool) error {
	for i := range entries {
		e := &entries[i]
		if e.Seq < uint64(len(t.entries)) {
			if h, own := e.Head(), t.entries[e.Seq].Head(); h != own {
				return fmt.Errorf("%w: entry %d has head %x, this party accepted %x at that position", ErrTranscriptFork, e.Seq, h[:8], own[:8])
			}
			continue
		}
		if e.Seq > uint64(len(t.entries)) {
			return fmt.Errorf("%w: entry %d follows a chain of %d entries: entries %d to %d are missing", ErrTranscriptFork, e.Seq, len(t.entries), len(t.entries), e.Seq-1)
		}
		if err := e.Verify(keys, unknownOK); err != nil {
			return err
		}
		if err := t.Check(e, p); err != nil {
			if errors.Is(err, ErrTranscriptFork) {
				return err
			}
			return fmt.Errorf("%w: signed entry %d breaks the rules: %w", ErrTranscript, e.Seq, err)
		}
		t.add(cloneEntry(*e))
	}
	return nil
}

func cloneEntry(e TranscriptEntry) TranscriptEntry {
	e.Digests = slices.Clone(e.Digests)
	e.C1 = slices.Clone(e.C1)
	e.Contributors = slices.Clone(e.Contributors)
	e.Participants = slices.Clone(e.Participants)
	sigs := make(map[string][]byte, len(e.Signatures))
	for id, s := range e.Signatures {
		sigs[id] = slices.Clone(s)
	}
	e.Signatures = sigs
	return e
}

// AddSignature records member id's signature of entry seq (the coordinator
// collects them as members answer); it must verify under key.
func (t *Transcript) AddSignature(seq int, id string, key ed25519.PublicKey, sig []byte) error {
	if seq < 0 || seq >= len(t.entries) {
		return fmt.Errorf("%w: signature for entry %d of %d", ErrTranscript, seq, len(t.entries))
	}
	e := &t.entries[seq]
	if _, ok := slices.BinarySearch(e.Participants, id); !ok {
		return fmt.Errorf("%w: %q signed entry %d but is not among its participants", ErrTranscript, id, seq)
	}
	if !ed25519.Verify(key, headMessage(e.Head()), sig) {
		return fmt.Errorf("%w: %q's signature of entry %d is not valid under its identity key", ErrTranscript, id, seq)
	}
	if e.Signatures == nil {
		e.Signatures = map[string][]byte{}
	}
	e.Signatures[id] = slices.Clone(sig)
	return nil
}

// VerifyTranscript re-checks a whole chain from genesis (what `tally ledger
// verify` does with the coordinator's copy): links, signatures and rules.
func VerifyTranscript(job string, entries []TranscriptEntry, p Policy, keys func(id string) (ed25519.PublicKey, bool)) (*Transcript, error) {
	t := NewTranscript(job)
	if err := t.Extend(entries, p, keys, false); err != nil {
		return t, err
	}
	return t, nil
}

// MarshalBinary encodes the whole transcript for persistence, with a
// trailing SHA-256 of everything before it so that a damaged file is
// recognised as such.
func (t *Transcript) MarshalBinary() ([]byte, error) {
	b := append([]byte(nil), transcriptMagic...)
	b = appendBytes(b, []byte(t.job))
	b = binary.BigEndian.AppendUint32(b, uint32(len(t.entries)))
	for i := range t.entries {
		eb, err := t.entries[i].MarshalBinary()
		if err != nil {
			return nil, err
		}
		b = appendBytes(b, eb)
	}
	sum := sha256.Sum256(b)
	return append(b, sum[:]...), nil
}

// UnmarshalTranscript decodes a transcript written by
// [Transcript.MarshalBinary], checking its checksum, every entry's shape
// and the links of the chain; the rules and signatures were checked when
// the entries were accepted, and a chain whose links hold is the one
// accepted.
func UnmarshalTranscript(b []byte) (*Transcript, error) {
	if len(b) < len(transcriptMagic)+sha256.Size {
		return nil, fmt.Errorf("%w: transcript: %d bytes", ErrMalformed, len(b))
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if s := sha256.Sum256(body); !bytes.Equal(s[:], sum) {
		return nil, fmt.Errorf("%w: transcript: checksum mismatch (damaged or truncated)", ErrMalformed)
	}
	rd := reader{b: body}
	if !bytes.Equal(rd.take(len(transcriptMagic)), transcriptMagic) {
		return nil, fmt.Errorf("%w: transcript: bad magic or version", ErrMalformed)
	}
	job := string(rd.bytes(maxIDLength))
	n := rd.u32()
	if rd.err == nil && n > maxTranscriptEntries {
		return nil, fmt.Errorf("%w: transcript: %d entries", ErrMalformed, n)
	}
	t := NewTranscript(job)
	for i := uint32(0); i < n && rd.err == nil; i++ {
		eb := rd.bytes(len(rd.b))
		if rd.err != nil {
			break
		}
		var e TranscriptEntry
		if err := e.UnmarshalBinary(eb); err != nil {
			return nil, fmt.Errorf("transcript entry %d: %w", i, err)
		}
		if e.Job != job || e.Seq != uint64(i) || e.Prev != t.head {
			return nil, fmt.Errorf("%w: transcript: entry %d does not extend the chain before it", ErrMalformed, i)
		}
		t.add(e)
	}
	if rd.err != nil {
		return nil, fmt.Errorf("%w: transcript: %v", ErrMalformed, rd.err)
	}
	if len(rd.b) != 0 {
		return nil, fmt.Errorf("%w: transcript: %d trailing bytes", ErrMalformed, len(rd.b))
	}
	return t, nil
}

// Admit is the step before any share of req leaves this member: it takes
// the transcript entries the coordinator says were added since this
// member's head (older ones may be resent; see [Transcript.Extend]),
// checks them, applies the rules ([Transcript.Check]) to req as the next
// entry of the job's chain, appends that entry and returns this member's
// signature of the new head, which goes back with its shares (the
// coordinator adds it to the entry, [Transcript.AddSignature]).
// [Member.DecryptShare] and [Member.DecryptCoefficientShare] serve only
// admitted requests. Admitting the same request again (a retransmission)
// returns the same signature; after a restart it is refused, as its
// digests are in the transcript. Refusals leave the transcript as it was,
// save for the valid entries of the ones given that were appended.
//
// Only a request this member verified ([Member.VerifyAggregate], for the
// key instance, round and attempt it verified last) is admitted; any
// other is refused with [ErrNotVerified] before anything is appended. The
// client always verified first (client/secure.go, client/batch.go); the
// member now holds to it itself, whoever drives it. The signature is its
// word on the entry, which others take as such: the coordinator adds it
// to the job's transcript ([Transcript.AddSignature]), `tally ledger
// verify` reports the entries signed by every participant, a signed entry
// that breaks the rules names its signers as deviating
// ([Transcript.Extend]), and the entry's C1 and Gradient are the ones
// "every participant checked". Signed without verification, it would let
// a deviating coordinator show member X vouching for a request X never
// checked — one client's update under invented names as an aggregate of
// k, a c₁ of its choosing — though no share of it was made
// (TestAttackAdmitWithoutVerification).
func (m *Member) Admit(req DecryptRequest, entries []TranscriptEntry) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.inst == nil || m.tsk == nil {
		return nil, fmt.Errorf("%w: member %q has no threshold share yet", ErrState, m.id)
	}
	if req.Purpose == PurposeInfluence {
		if err := checkInfluenceRequest(req, m.inst); err != nil {
			return nil, err
		}
		if !slices.Contains(req.Participants, m.id) {
			return nil, fmt.Errorf("%w: %q is not among the request's participants", ErrNotMember, m.id)
		}
		if err := m.checkCoefficientBudget(0); err != nil {
			return nil, err
		}
	} else {
		if err := m.checkRequest(req); err != nil {
			return nil, err
		}
		if err := m.checkWholeBudget(req); err != nil {
			return nil, err
		}
	}
	if err := m.requireVerified(req); err != nil {
		return nil, fmt.Errorf("member %q: %w", m.id, err)
	}
	id := req.ID()
	if sig, ok := m.admitted[id]; ok {
		return sig, nil
	}
	if m.transcript == nil {
		m.transcript = NewTranscript(m.inst.job)
	}
	tr := m.transcript
	if tr.job != m.inst.job {
		return nil, fmt.Errorf("%w: member %q holds the transcript of job %q, its key instance is job %q's", ErrTranscript, m.id, tr.job, m.inst.job)
	}
	n := tr.Len()
	if err := tr.Extend(entries, m.policy, m.identityKey, m.keys == nil); err != nil {
		m.countFrom(n)
		return nil, fmt.Errorf("member %q: %w", m.id, err)
	}
	m.countFrom(n)
	e := NewTranscriptEntry(tr.job, uint64(tr.Len()), tr.Head(), req)
	if err := tr.Check(&e, m.policy); err != nil {
		return nil, fmt.Errorf("member %q: %w", m.id, err)
	}
	sig := SignTranscriptHead(m.signer, e.Head())
	e.Signatures = map[string][]byte{m.id: sig}
	tr.add(e)
	m.countFrom(tr.Len() - 1)
	m.admitted[id] = sig
	return sig, nil
}

// countFrom adds this member's releases in the entries from position n on
// to its flooding counts.
func (m *Member) countFrom(n int) {
	for i := n; i < m.transcript.Len(); i++ {
		m.count(&m.transcript.entries[i])
	}
}

// count adds e to the member's flooding counts if it took part.
func (m *Member) count(e *TranscriptEntry) {
	if !slices.Contains(e.Participants, m.id) {
		return
	}
	if e.Purpose == PurposeInfluence {
		m.scalars += int(e.Scalars)
	} else {
		m.blocks += len(e.Digests)
	}
}

// identityKey is the identity key a transcript signer is checked against:
// the pinned one, or (no pinned keys) the one the current instance lists.
func (m *Member) identityKey(id string) (ed25519.PublicKey, bool) {
	if m.keys != nil {
		return m.keys.IdentityKey(id)
	}
	if id == m.id {
		return m.signer.Public().(ed25519.PublicKey), true
	}
	if p, ok := m.inst.member(id); ok {
		return p.SigningKey, true
	}
	return nil, false
}

// Restore appends an entry read back from storage, checking only that it
// extends the chain (the rules held when it was appended): the
// coordinator's copy after a restart.
func (t *Transcript) Restore(e TranscriptEntry) error {
	if e.Job != t.job || e.Seq != uint64(len(t.entries)) || e.Prev != t.head {
		return fmt.Errorf("%w: entry %d does not extend the chain of %d entries", ErrTranscript, e.Seq, len(t.entries))
	}
	if err := e.validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrTranscript, err)
	}
	t.add(cloneEntry(e))
	return nil
}
