package aggregation

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
)

// Identity is a member's long-term X25519 key pair. The public half travels
// to the other members through the coordinator (in [MemberInfo]); the
// private half never leaves the member and must be persisted by it.
type Identity struct {
	priv *ecdh.PrivateKey
}

// NewIdentity draws a fresh key pair from rand (crypto/rand.Reader in
// production).
func NewIdentity(rand io.Reader) (*Identity, error) {
	k, err := ecdh.X25519().GenerateKey(rand)
	if err != nil {
		return nil, fmt.Errorf("aggregation: generate X25519 key: %w", err)
	}
	return &Identity{priv: k}, nil
}

// IdentityFromBytes restores a key pair from the 32 bytes of [Identity.Bytes].
func IdentityFromBytes(b []byte) (*Identity, error) {
	k, err := ecdh.X25519().NewPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%w: X25519 private key: %v", ErrMalformed, err)
	}
	return &Identity{priv: k}, nil
}

// Bytes returns the private key, for the member's own storage only.
func (id *Identity) Bytes() []byte { return id.priv.Bytes() }

// PublicKey returns the 32-byte public key to publish.
func (id *Identity) PublicKey() []byte { return id.priv.PublicKey().Bytes() }

// Sealed messages: version(1) ‖ nonce(12) ‖ AES-256-GCM ciphertext.
//
// The key is HKDF-SHA256 over the static-static X25519 secret of sender and
// recipient, with info binding the direction and both public keys, and the
// associated data binds (instance, sender, recipient). Static-static
// agreement authenticates the sender to the recipient: the coordinator
// relaying the message can neither read it, nor forge one, nor move it to
// another instance, sender or recipient slot. Each key seals exactly one
// message per instance, so a random nonce cannot repeat under a key.
const (
	sealVersion  = 1
	sealNonce    = 12
	sealOverhead = 1 + sealNonce + 16
)

// sealContext names what a sealed message is bound to.
type sealContext struct {
	instance  [32]byte
	sender    string
	recipient string
}

func (c sealContext) associatedData() []byte {
	b := make([]byte, 0, 64+len(c.sender)+len(c.recipient))
	b = append(b, "tally/aggregation/seal/v1"...)
	b = append(b, c.instance[:]...)
	b = binary.AppendUvarint(b, uint64(len(c.sender)))
	b = append(b, c.sender...)
	b = binary.AppendUvarint(b, uint64(len(c.recipient)))
	b = append(b, c.recipient...)
	return b
}

func sealKey(own *Identity, peer []byte, senderPub, recipientPub []byte, ad []byte) ([]byte, error) {
	pk, err := ecdh.X25519().NewPublicKey(peer)
	if err != nil {
		return nil, fmt.Errorf("%w: X25519 public key: %v", ErrMalformed, err)
	}
	secret, err := own.priv.ECDH(pk)
	if err != nil {
		return nil, fmt.Errorf("%w: X25519 agreement: %v", ErrSealed, err)
	}
	info := make([]byte, 0, len(ad)+64)
	info = append(info, ad...)
	info = append(info, senderPub...)
	info = append(info, recipientPub...)
	key, err := hkdf.Key(sha256.New, secret, nil, string(info), 32)
	if err != nil {
		return nil, fmt.Errorf("aggregation: hkdf: %w", err)
	}
	return key, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("aggregation: aes: %w", err)
	}
	return cipher.NewGCM(block)
}

// seal encrypts plaintext from sender to the holder of recipientPub.
func seal(sender *Identity, recipientPub []byte, ctx sealContext, plaintext []byte, rand io.Reader) ([]byte, error) {
	ad := ctx.associatedData()
	key, err := sealKey(sender, recipientPub, sender.PublicKey(), recipientPub, ad)
	if err != nil {
		return nil, err
	}
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 1+sealNonce, sealOverhead+len(plaintext))
	out[0] = sealVersion
	if _, err := io.ReadFull(rand, out[1:1+sealNonce]); err != nil {
		return nil, fmt.Errorf("aggregation: nonce: %w", err)
	}
	return aead.Seal(out, out[1:1+sealNonce], plaintext, ad), nil
}

// open decrypts a message sealed by the holder of senderPub for recipient.
func open(recipient *Identity, senderPub []byte, ctx sealContext, sealed []byte) ([]byte, error) {
	if len(sealed) < sealOverhead {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the envelope", ErrSealed, len(sealed))
	}
	if sealed[0] != sealVersion {
		return nil, fmt.Errorf("%w: version %d", ErrSealed, sealed[0])
	}
	ad := ctx.associatedData()
	key, err := sealKey(recipient, senderPub, senderPub, recipient.PublicKey(), ad)
	if err != nil {
		return nil, err
	}
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	pt, err := aead.Open(nil, sealed[1:1+sealNonce], sealed[1+sealNonce:], ad)
	if err != nil {
		return nil, fmt.Errorf("%w: from %q to %q: authentication failed", ErrSealed, ctx.sender, ctx.recipient)
	}
	return pt, nil
}
