package aggregation

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
)

// Authenticated key generation (issue 13, item 3). The coordinator relays
// every key-generation message, so nothing it relays may be taken on its
// word: each member signs, with its Ed25519 identity key, its X25519 key,
// a commitment to its public-key share before anyone reveals one, and the
// collective public key it aggregated itself. A client encrypts only under
// a key that carries the signature of every committee member.

// MemberKeys is where a party finds a committee member's Ed25519 identity
// key: the key the member signs its calls and its key-generation messages
// with. A job manifest pinned by the data holders implements it; the
// coordinator's word does not: where a function takes a nil MemberKeys it
// falls back to the identity keys the instance lists, which only the
// coordinator vouches for. Implementations must be safe for concurrent use.
type MemberKeys interface {
	IdentityKey(id string) (ed25519.PublicKey, bool)
}

// Domain-separation prefixes of everything signed or committed to.
const (
	domainX25519     = "tally/aggregation/x25519-key/v1"
	domainShare      = "tally/aggregation/public-key-share/v1"
	domainCommitment = "tally/aggregation/commitment/v1"
	domainKey        = "tally/aggregation/collective-key/v1"
)

// x25519Message binds a member's X25519 key to its id within a job.
func x25519Message(job, id string, key []byte) []byte {
	b := append([]byte(nil), domainX25519...)
	b = appendBytes(b, []byte(job))
	b = appendBytes(b, []byte(id))
	return appendBytes(b, key)
}

// shareDigest is the commitment to a public-key share: SHA-256 over
// (domain, instance, member, share). A share is an RLWE sample, uniform
// to anyone without the secret, so its hash hides it until the reveal.
func shareDigest(inst [32]byte, id string, share []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(domainShare))
	h.Write(inst[:])
	h.Write(appendBytes(nil, []byte(id)))
	h.Write(share)
	var d [32]byte
	h.Sum(d[:0])
	return d
}

func commitmentMessage(inst [32]byte, id string, digest [32]byte) []byte {
	b := append([]byte(nil), domainCommitment...)
	b = append(b, inst[:]...)
	b = appendBytes(b, []byte(id))
	return append(b, digest[:]...)
}

// keyMessage is what a member signs of the collective key; digest is the
// SHA-256 of the marshalled key (1.5 MiB at the default parameters, so it
// is hashed once per check of c signatures, not once per signature).
func keyMessage(job string, inst [32]byte, digest [32]byte) []byte {
	b := append([]byte(nil), domainKey...)
	b = appendBytes(b, []byte(job))
	b = append(b, inst[:]...)
	return append(b, digest[:]...)
}

// Commitment is a member's signed commitment to its public-key share for
// one instance, sent before any share is revealed. It also carries the
// member's signature of its X25519 key, which the other members check
// before they seal a Shamir share to that key.
type Commitment struct {
	Instance [32]byte
	Member   string
	// Share is shareDigest of the public-key share the member will reveal.
	Share [32]byte
	// X25519Signature signs (domain, job, member, X25519 key).
	X25519Signature []byte
	// Signature signs (domain, instance, member, Share).
	Signature []byte
}

var commitmentMagic = []byte{'T', 'A', 'C', 'M', wireVersion}

// MarshalBinary encodes the commitment.
func (c *Commitment) MarshalBinary() ([]byte, error) {
	b := append([]byte(nil), commitmentMagic...)
	b = append(b, c.Instance[:]...)
	b = appendBytes(b, []byte(c.Member))
	b = append(b, c.Share[:]...)
	b = appendBytes(b, c.X25519Signature)
	return appendBytes(b, c.Signature), nil
}

// UnmarshalBinary decodes a commitment; it checks the form only, not the
// signatures.
func (c *Commitment) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	if !bytes.Equal(r.take(len(commitmentMagic)), commitmentMagic) {
		return fmt.Errorf("%w: commitment: bad magic or version", ErrMalformed)
	}
	var out Commitment
	copy(out.Instance[:], r.take(32))
	out.Member = string(r.bytes(maxIDLength))
	copy(out.Share[:], r.take(32))
	out.X25519Signature = r.bytes(ed25519.SignatureSize)
	out.Signature = r.bytes(ed25519.SignatureSize)
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%d trailing bytes", len(r.b))
	}
	if r.err != nil {
		return fmt.Errorf("%w: commitment: %v", ErrMalformed, r.err)
	}
	*c = out
	return nil
}

// identityKey resolves member id's identity key through keys, and refuses
// an instance whose listed key differs from it: the instance ID hashes the
// listed keys, so every member must see the same, pinned ones.
func (k *KeyGenInstance) identityKey(keys MemberKeys, id string) (ed25519.PublicKey, error) {
	m, ok := k.member(id)
	if !ok {
		return nil, fmt.Errorf("%w: %q in instance %x", ErrNotMember, id, k.id[:8])
	}
	if keys == nil {
		return m.SigningKey, nil
	}
	pinned, ok := keys.IdentityKey(id)
	if !ok || len(pinned) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: no identity key is known for committee member %q", ErrMemberKey, id)
	}
	if !bytes.Equal(pinned, m.SigningKey) {
		return nil, fmt.Errorf("%w: instance %x lists identity key %x for %q, the pinned key is %x", ErrMemberKey, k.id[:8], m.SigningKey[:8], id, pinned[:8])
	}
	return pinned, nil
}

// VerifyCommitment decodes the commitment b of member id and checks both
// its signatures under id's identity key from keys (nil: the instance's
// listed keys). A bad X25519 signature is [ErrMemberKey]; anything else
// wrong is [ErrCommitment].
func (k *KeyGenInstance) VerifyCommitment(keys MemberKeys, id string, b []byte) (Commitment, error) {
	var c Commitment
	if err := c.UnmarshalBinary(b); err != nil {
		return c, fmt.Errorf("%w: from %q: %w", ErrCommitment, id, err)
	}
	if c.Member != id || c.Instance != k.id {
		return c, fmt.Errorf("%w: the commitment given as %q's for instance %x is %q's for instance %x", ErrCommitment, id, k.id[:8], c.Member, c.Instance[:8])
	}
	key, err := k.identityKey(keys, id)
	if err != nil {
		return c, err
	}
	m, _ := k.member(id)
	if !ed25519.Verify(key, x25519Message(k.job, id, m.PublicKey), c.X25519Signature) {
		return c, fmt.Errorf("%w: the X25519 key instance %x lists for %q (%x) is not signed by %q's identity key", ErrMemberKey, k.id[:8], id, m.PublicKey[:8], id)
	}
	if !ed25519.Verify(key, commitmentMessage(k.id, id, c.Share), c.Signature) {
		return c, fmt.Errorf("%w: %q's commitment is not signed by its identity key", ErrCommitment, id)
	}
	return c, nil
}

// CheckRevealedShare checks that share is the public-key share member id
// committed to in commitment b (already verified with VerifyCommitment).
func (k *KeyGenInstance) CheckRevealedShare(id string, b, share []byte) error {
	var c Commitment
	if err := c.UnmarshalBinary(b); err != nil {
		return fmt.Errorf("%w: from %q: %w", ErrCommitment, id, err)
	}
	if d := shareDigest(k.id, id, share); c.Member != id || c.Instance != k.id || d != c.Share {
		return fmt.Errorf("%w: the public-key share revealed for %q hashes to %x, it committed to %x", ErrCommitment, id, d[:8], c.Share[:8])
	}
	return nil
}

// VerifyKeySignature checks member id's signature of the collective key of
// this instance whose marshalled form hashes (SHA-256) to keyDigest, under
// id's key from keys (nil: the listed keys).
func (k *KeyGenInstance) VerifyKeySignature(keys MemberKeys, id string, keyDigest [32]byte, sig []byte) error {
	key, err := k.identityKey(keys, id)
	if err != nil {
		return err
	}
	if !ed25519.Verify(key, keyMessage(k.job, k.id, keyDigest), sig) {
		return fmt.Errorf("%w: %q did not sign collective key %x of instance %x", ErrUnsignedKey, id, keyDigest[:8], k.id[:8])
	}
	return nil
}

// KeyCertificate is the committee's attestation of a collective public
// key: the instance and every member's signature of the key. The
// coordinator serves it with the key; a client checks it with
// [VerifyPublicKey] before it encrypts anything.
type KeyCertificate struct {
	Instance   *KeyGenInstance
	Signatures map[string][]byte
}

var certificateMagic = []byte{'T', 'A', 'K', 'C', wireVersion}

// MarshalBinary encodes the certificate, members in instance order.
func (c *KeyCertificate) MarshalBinary() ([]byte, error) {
	inst, err := c.Instance.MarshalBinary()
	if err != nil {
		return nil, err
	}
	b := append([]byte(nil), certificateMagic...)
	b = appendBytes(b, inst)
	ids := make([]string, 0, len(c.Signatures))
	for id := range c.Signatures {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	b = binary.BigEndian.AppendUint32(b, uint32(len(ids)))
	for _, id := range ids {
		b = appendBytes(b, []byte(id))
		b = appendBytes(b, c.Signatures[id])
	}
	return b, nil
}

// UnmarshalKeyCertificate decodes a certificate and re-validates its
// instance under params; it checks no signature.
func UnmarshalKeyCertificate(params Parameters, b []byte) (*KeyCertificate, error) {
	r := reader{b: b}
	if !bytes.Equal(r.take(len(certificateMagic)), certificateMagic) {
		return nil, fmt.Errorf("%w: key certificate: bad magic or version", ErrMalformed)
	}
	instBlob := r.bytes(1 << 20)
	n := r.u32()
	if r.err == nil && n > maxMembers {
		return nil, fmt.Errorf("%w: key certificate: %d signatures", ErrMalformed, n)
	}
	sigs := map[string][]byte{}
	for i := uint32(0); i < n && r.err == nil; i++ {
		id := string(r.bytes(maxIDLength))
		sigs[id] = r.bytes(ed25519.SignatureSize)
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%d trailing bytes", len(r.b))
	}
	if r.err != nil {
		return nil, fmt.Errorf("%w: key certificate: %v", ErrMalformed, r.err)
	}
	inst, err := UnmarshalKeyGenInstance(params, instBlob)
	if err != nil {
		return nil, fmt.Errorf("key certificate: %w", err)
	}
	return &KeyCertificate{Instance: inst, Signatures: sigs}, nil
}

// VerifyPublicKey checks that the marshalled collective key pk carries a
// valid signature of every member of the certificate's committee over
// (job, key instance, SHA-256 of pk), each under the member's identity key
// from keys (nil: the keys the instance lists, which only the coordinator
// vouches for), and that pk is bound to that instance. It returns the
// instance, whose members and threshold the caller may check further.
// Any failure wraps [ErrUnsignedKey] or [ErrMemberKey]: the caller must not
// encrypt under pk.
func VerifyPublicKey(params Parameters, pk, certificate []byte, keys MemberKeys) (*KeyGenInstance, error) {
	if len(certificate) == 0 {
		return nil, fmt.Errorf("%w: the key came with no certificate of the committee", ErrUnsignedKey)
	}
	cert, err := UnmarshalKeyCertificate(params, certificate)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnsignedKey, err)
	}
	inst := cert.Instance
	key, err := PublicKeyInstance(params, pk)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnsignedKey, err)
	}
	if key != inst.id {
		return nil, fmt.Errorf("%w: the key is bound to instance %x, its certificate names instance %x", ErrUnsignedKey, key[:8], inst.id[:8])
	}
	var missing []string
	digest := sha256.Sum256(pk)
	for _, m := range inst.members {
		sig, ok := cert.Signatures[m.ID]
		if !ok {
			missing = append(missing, m.ID)
			continue
		}
		if err := inst.VerifyKeySignature(keys, m.ID, digest, sig); err != nil {
			return nil, err
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: %d of the %d committee members of instance %x did not sign it: %q", ErrUnsignedKey, len(missing), len(inst.members), inst.id[:8], missing)
	}
	for id := range cert.Signatures {
		if _, ok := inst.member(id); !ok {
			return nil, fmt.Errorf("%w: the certificate carries a signature of %q, who is not on the committee", ErrUnsignedKey, id)
		}
	}
	return inst, nil
}
