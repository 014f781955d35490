package aggregation

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/tuneinsight/lattigo/v6/core/rlwe"
	"github.com/tuneinsight/lattigo/v6/multiparty"
	"github.com/tuneinsight/lattigo/v6/ring/ringqp"
	"github.com/tuneinsight/lattigo/v6/utils/sampling"
)

// Limits on committee descriptions, so that a hostile instance cannot make
// a member allocate without bound.
const (
	maxMembers  = 256
	maxIDLength = 256
	maxSeedLen  = 64
	maxJobLen   = 256
)

// MemberInfo is the public description of a committee member.
type MemberInfo struct {
	// ID is the member's client identity, unique in the committee.
	ID string
	// PublicKey is the member's long-term X25519 public key (32 bytes),
	// from [Identity.PublicKey].
	PublicKey []byte
	// SigningKey is the member's Ed25519 identity key as the coordinator
	// knows it (the key the member signs its calls with). Members and
	// clients check every key-generation signature against the pinned key
	// of [MemberKeys] when they have one, and refuse an instance listing
	// another; without one, against this.
	SigningKey ed25519.PublicKey
}

// Committee is what the coordinator decides at job start (or at a re-key):
// who holds the key, with which threshold. It becomes a [KeyGenInstance].
type Committee struct {
	// Job names the training job.
	Job string
	// Seed is the job seed; with the rest of the committee it keys the
	// PRNG of the common reference polynomial. 1–64 bytes.
	Seed []byte
	// Epoch counts key generations within the job: a re-key after the
	// committee lost too many members uses the next epoch.
	Epoch uint64
	// Threshold t: any t members decrypt, t−1 cannot. 2 ≤ t ≤ len(Members).
	Threshold int
	// Members, in any order; the instance sorts them by ID.
	Members []MemberInfo
}

// KeyGenInstance is an immutable, validated committee. Its ID is the
// SHA-256 of its canonical encoding (docs/STYLE.md §4): kind, parameters, job, seed,
// epoch, threshold and the sorted members with their public keys. Every
// message of the key generation and every ciphertext under the resulting
// key carries that ID.
type KeyGenInstance struct {
	params  [8]byte
	job     string
	seed    []byte
	epoch   uint64
	t       int
	members []MemberInfo
	points  map[string]multiparty.ShamirPublicPoint
	id      [32]byte
}

// NewKeyGenInstance validates c and returns the instance, or every problem
// at once wrapped in [ErrInvalidInput].
func NewKeyGenInstance(params Parameters, c Committee) (*KeyGenInstance, error) {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidInput}, a...)...))
	}
	if c.Job == "" || len(c.Job) > maxJobLen {
		bad("job name must have 1 to %d bytes", maxJobLen)
	}
	if len(c.Seed) == 0 || len(c.Seed) > maxSeedLen {
		bad("seed must have 1 to %d bytes, has %d", maxSeedLen, len(c.Seed))
	}
	n := len(c.Members)
	if n < 2 || n > maxMembers {
		bad("committee has %d members, need 2 to %d", n, maxMembers)
	}
	if c.Threshold < 2 || c.Threshold > n {
		bad("threshold %d outside [2, %d]: a single member must never decrypt alone", c.Threshold, n)
	}
	members := make([]MemberInfo, n)
	for i, m := range c.Members {
		members[i] = MemberInfo{ID: m.ID, PublicKey: append([]byte(nil), m.PublicKey...), SigningKey: append(ed25519.PublicKey(nil), m.SigningKey...)}
	}
	slices.SortFunc(members, func(a, b MemberInfo) int { return strings.Compare(a.ID, b.ID) })
	for i, m := range members {
		if m.ID == "" || len(m.ID) > maxIDLength {
			bad("member %q: id must have 1 to %d bytes", m.ID, maxIDLength)
		}
		if i > 0 && members[i-1].ID == m.ID {
			bad("member %q listed twice", m.ID)
		}
		if _, err := ecdh.X25519().NewPublicKey(m.PublicKey); err != nil {
			bad("member %q: X25519 public key: %v", m.ID, err)
		}
		if len(m.SigningKey) != ed25519.PublicKeySize {
			bad("member %q: identity key has %d bytes, want the %d of an Ed25519 public key", m.ID, len(m.SigningKey), ed25519.PublicKeySize)
		}
		for j := 0; j < i; j++ {
			if bytes.Equal(members[j].PublicKey, m.PublicKey) {
				bad("members %q and %q share a public key", members[j].ID, m.ID)
			}
			if len(m.SigningKey) > 0 && bytes.Equal(members[j].SigningKey, m.SigningKey) {
				bad("members %q and %q share an identity key", members[j].ID, m.ID)
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	inst := &KeyGenInstance{
		params:  params.ID(),
		job:     c.Job,
		seed:    append([]byte(nil), c.Seed...),
		epoch:   c.Epoch,
		t:       c.Threshold,
		members: members,
		points:  make(map[string]multiparty.ShamirPublicPoint, n),
	}
	for i, m := range members {
		// Shamir points must be distinct and non-zero; the sorted
		// position + 1 is both, and every party derives the same one.
		inst.points[m.ID] = multiparty.ShamirPublicPoint(i + 1)
	}
	inst.id = sha256.Sum256(inst.encode(true))
	return inst, nil
}

// instanceMagic opens a marshalled instance. Its last byte is the
// instance's own version: 2 added each member's identity key, so an
// instance stored before is refused by name rather than misread.
var instanceMagic = []byte{'T', 'A', 'K', 'G', 2}

// encode is the canonical encoding; with forID it is prefixed by a domain
// separation string instead of the wire magic.
func (k *KeyGenInstance) encode(forID bool) []byte {
	var b []byte
	if forID {
		b = append(b, "tally/aggregation/keygen/v2"...)
	} else {
		b = append(b, instanceMagic...)
	}
	b = append(b, k.params[:]...)
	b = appendBytes(b, []byte(k.job))
	b = appendBytes(b, k.seed)
	b = binary.BigEndian.AppendUint64(b, k.epoch)
	b = binary.BigEndian.AppendUint32(b, uint32(k.t))
	b = binary.BigEndian.AppendUint32(b, uint32(len(k.members)))
	for _, m := range k.members {
		b = appendBytes(b, []byte(m.ID))
		b = appendBytes(b, m.PublicKey)
		b = appendBytes(b, m.SigningKey)
	}
	return b
}

// MarshalBinary encodes the instance so the coordinator can send it to the
// members; they recompute the ID from the content.
func (k *KeyGenInstance) MarshalBinary() ([]byte, error) { return k.encode(false), nil }

// UnmarshalKeyGenInstance decodes and re-validates an instance under params.
func UnmarshalKeyGenInstance(params Parameters, b []byte) (*KeyGenInstance, error) {
	r := reader{b: b}
	magic := r.take(5)
	if !bytes.Equal(magic, instanceMagic) {
		return nil, fmt.Errorf("%w: key-generation instance: bad magic or version", ErrMalformed)
	}
	var pid [8]byte
	copy(pid[:], r.take(8))
	var c Committee
	c.Job = string(r.bytes(maxJobLen))
	c.Seed = r.bytes(maxSeedLen)
	c.Epoch = r.u64()
	t := r.u32()
	n := r.u32()
	if r.err == nil && n > maxMembers {
		return nil, fmt.Errorf("%w: key-generation instance: %d members", ErrMalformed, n)
	}
	for i := uint32(0); i < n && r.err == nil; i++ {
		id := string(r.bytes(maxIDLength))
		pk := r.bytes(64)
		sk := r.bytes(64)
		c.Members = append(c.Members, MemberInfo{ID: id, PublicKey: pk, SigningKey: sk})
	}
	if r.err != nil {
		return nil, fmt.Errorf("%w: key-generation instance: %v", ErrMalformed, r.err)
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: key-generation instance: %d trailing bytes", ErrMalformed, len(r.b))
	}
	if pid != params.ID() {
		return nil, fmt.Errorf("%w: key-generation instance made with parameters %x", ErrParametersMismatch, pid)
	}
	c.Threshold = int(t)
	if t > maxMembers {
		c.Threshold = -1
	}
	inst, err := NewKeyGenInstance(params, c)
	if err != nil {
		return nil, fmt.Errorf("%w: key-generation instance: %w", ErrMalformed, err)
	}
	return inst, nil
}

// ID is the content hash naming this instance.
func (k *KeyGenInstance) ID() [32]byte { return k.id }

// Threshold is t.
func (k *KeyGenInstance) Threshold() int { return k.t }

// Job is the job the instance belongs to.
func (k *KeyGenInstance) Job() string { return k.job }

// Epoch is the key-generation counter within the job.
func (k *KeyGenInstance) Epoch() uint64 { return k.epoch }

// Members returns the members sorted by ID (a copy).
func (k *KeyGenInstance) Members() []MemberInfo {
	out := make([]MemberInfo, len(k.members))
	for i, m := range k.members {
		out[i] = MemberInfo{ID: m.ID, PublicKey: append([]byte(nil), m.PublicKey...), SigningKey: append(ed25519.PublicKey(nil), m.SigningKey...)}
	}
	return out
}

// member returns the info of id.
func (k *KeyGenInstance) member(id string) (MemberInfo, bool) {
	i, ok := slices.BinarySearchFunc(k.members, id, func(m MemberInfo, id string) int { return strings.Compare(m.ID, id) })
	if !ok {
		return MemberInfo{}, false
	}
	return k.members[i], true
}

// crp derives the common reference polynomial of the public-key generation
// from a keyed PRNG over (instance ID, purpose); the instance ID already
// hashes the job seed, so every party computes the same polynomial and the
// coordinator cannot choose it.
func (k *KeyGenInstance) crp(params Parameters, proto multiparty.PublicKeyGenProtocol) multiparty.PublicKeyGenCRP {
	key := sha256.Sum256(append([]byte("tally/aggregation/crp/public-key/v1"), k.id[:]...))
	prng, err := sampling.NewKeyedPRNG(key[:])
	if err != nil {
		// NewKeyedPRNG fails only on an invalid key length, and ours is
		// fixed: a broken invariant.
		panic(err)
	}
	return proto.SampleCRP(prng)
}

// qpLayout is the layout of one polynomial over the full QP basis.
func (p Parameters) qpLayout(kind msgKind, polys int) layout {
	return layout{kind: kind, levelQ: p.ckks.MaxLevel(), rowsP: len(p.ckks.P()), polys: polys}
}

func marshalQP(p Parameters, kind msgKind, key [32]byte, polys ...ringqp.Poly) []byte {
	l := p.qpLayout(kind, len(polys))
	out := make([]byte, l.size(p.ckks.N()))
	putHeader(out, p, l, key)
	off := baseHeaderSize
	for _, poly := range polys {
		// Lattigo may leave residues lazily reduced; the wire form is
		// canonical so that receivers can reject anything else.
		p.ckks.RingQ().Reduce(poly.Q, poly.Q)
		p.ckks.RingP().Reduce(poly.P, poly.P)
		off += putRows(out[off:], polyRows(poly.Q, &poly.P))
	}
	return out
}

// unmarshalQP validates b as a message of the given kind bound to key and
// decodes its polynomials.
func unmarshalQP(p Parameters, kind msgKind, polys int, key [32]byte, b []byte) ([]ringqp.Poly, error) {
	l := p.qpLayout(kind, polys)
	h, err := checkHeader(b, p, l)
	if err != nil {
		return nil, err
	}
	if h.key != key {
		return nil, fmt.Errorf("%w: %v bound to key instance %x, expected %x", ErrKeyMismatch, kind, h.key[:8], key[:8])
	}
	data := b[baseHeaderSize:]
	if err := checkCoeffs(data, p.moduliRows(l), p.ckks.N(), polys, kind); err != nil {
		return nil, err
	}
	out := make([]ringqp.Poly, polys)
	off := 0
	for i := range out {
		out[i] = p.ckks.RingQP().NewPoly()
		off += readRows(data[off:], polyRows(out[i].Q, &out[i].P))
	}
	return out, nil
}

// AggregatePublicKey combines the public-key shares of every committee
// member (the collective key needs all c of them: if one is missing the
// coordinator re-keys) into the marshalled collective public key, which
// every client passes to [NewEncryptor].
func AggregatePublicKey(params Parameters, inst *KeyGenInstance, shares map[string][]byte) ([]byte, error) {
	if len(shares) != len(inst.members) {
		return nil, fmt.Errorf("%w: %d public-key shares for %d members", ErrIncomplete, len(shares), len(inst.members))
	}
	proto := multiparty.NewPublicKeyGenProtocol(params.ckks)
	agg := proto.AllocateShare()
	for i, m := range inst.members {
		b, ok := shares[m.ID]
		if !ok {
			return nil, fmt.Errorf("%w: no public-key share from %q", ErrIncomplete, m.ID)
		}
		polys, err := unmarshalQP(params, kindPKShare, 1, inst.id, b)
		if err != nil {
			return nil, fmt.Errorf("public-key share from %q: %w", m.ID, err)
		}
		sh := multiparty.PublicKeyGenShare{Value: polys[0]}
		if i == 0 {
			agg.Value.Copy(sh.Value)
		} else {
			proto.AggregateShares(agg, sh, &agg)
		}
	}
	pk := rlwe.NewPublicKey(params.ckks)
	proto.GenPublicKey(agg, inst.crp(params, proto), pk)
	return marshalQP(params, kindPublicKey, inst.id, pk.Value[0], pk.Value[1]), nil
}

// PublicKeyInstance returns the key-generation instance ID a marshalled
// public key is bound to, after validating its header against params.
func PublicKeyInstance(params Parameters, pk []byte) ([32]byte, error) {
	h, err := checkHeader(pk, params, params.qpLayout(kindPublicKey, 2))
	return h.key, err
}

func parsePublicKey(params Parameters, b []byte) (*rlwe.PublicKey, [32]byte, error) {
	key, err := PublicKeyInstance(params, b)
	if err != nil {
		return nil, key, err
	}
	polys, err := unmarshalQP(params, kindPublicKey, 2, key, b)
	if err != nil {
		return nil, key, err
	}
	return &rlwe.PublicKey{Value: rlwe.VectorQP{polys[0], polys[1]}}, key, nil
}

// reader decodes length-prefixed fields, remembering the first error.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return make([]byte, n)
	}
	if len(r.b) < n {
		r.err = errors.New("truncated")
		r.b = nil
		return make([]byte, n)
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u64() uint64 { return binary.BigEndian.Uint64(r.take(8)) }
func (r *reader) u32() uint32 { return binary.BigEndian.Uint32(r.take(4)) }

func (r *reader) bytes(max int) []byte {
	n := r.u32()
	if r.err != nil {
		return nil
	}
	if int64(n) > int64(max) {
		r.err = fmt.Errorf("field of %d bytes exceeds %d", n, max)
		return nil
	}
	return append([]byte(nil), r.take(int(n))...)
}

func appendBytes(b, v []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}
