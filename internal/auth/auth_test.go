package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
)

func newKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestVerify: a call verifies once, with the key, job and method it was
// signed for, within the skew; every alteration is refused with its reason.
func TestVerify(t *testing.T) {
	key, other := newKey(t), newKey(t)
	pub := key.Public().(ed25519.PublicKey)
	now := time.Unix(1_800_000_000, 0)
	const method = "/tally.v1.CoordinatorService/NextTask"
	sign := func(k ed25519.PrivateKey, job, client, m string, at time.Time) Call {
		md, err := Sign(k, job, client, m, at)
		if err != nil {
			t.Fatal(err)
		}
		c, err := Parse(md)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, tc := range []struct {
		name string
		call Call
		want error
	}{
		{"good", sign(key, "job", "a", method, now), nil},
		{"other key", sign(other, "job", "a", method, now), ErrBadSig},
		{"other job", sign(key, "job2", "a", method, now), ErrBadSig},
		{"other method", sign(key, "job", "a", "/tally.v1.CoordinatorService/Receipts", now), ErrBadSig},
		{"late", sign(key, "job", "a", method, now.Add(-DefaultSkew-time.Millisecond)), ErrExpired},
		{"early", sign(key, "job", "a", method, now.Add(DefaultSkew+time.Millisecond)), ErrExpired},
		{"at the edge", sign(key, "job", "a", method, now.Add(-DefaultSkew)), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := NewVerifier("job", 0)
			if err := v.Verify(tc.call, pub, method, now); !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
			if tc.want != nil {
				if v.Remembered() != 0 {
					t.Errorf("a refused call left %d nonces behind", v.Remembered())
				}
				return
			}
			if err := v.Verify(tc.call, pub, method, now); !errors.Is(err, ErrReplayed) {
				t.Errorf("the same call again: %v, want ErrReplayed", err)
			}
		})
	}
	// A client id swapped into a genuine call breaks its signature.
	c := sign(key, "job", "a", method, now)
	c.Client = "b"
	if err := NewVerifier("job", 0).Verify(c, pub, method, now); !errors.Is(err, ErrBadSig) {
		t.Errorf("client swapped: %v, want ErrBadSig", err)
	}
}

// TestNoncesForgotten: nonces are kept while their calls could still be
// accepted, and dropped after.
func TestNoncesForgotten(t *testing.T) {
	key := newKey(t)
	pub := key.Public().(ed25519.PublicKey)
	v := NewVerifier("job", time.Minute)
	start := time.Unix(1_800_000_000, 0)
	for i := range 10 {
		at := start.Add(time.Duration(i) * time.Second)
		md, _ := Sign(key, "job", "a", "/m", at)
		c, _ := Parse(md)
		if err := v.Verify(c, pub, "/m", at); err != nil {
			t.Fatal(err)
		}
	}
	if n := v.Remembered(); n != 10 {
		t.Fatalf("remembered %d nonces, want 10", n)
	}
	later := start.Add(3 * time.Minute)
	md, _ := Sign(key, "job", "a", "/m", later)
	c, _ := Parse(md)
	if err := v.Verify(c, pub, "/m", later); err != nil {
		t.Fatal(err)
	}
	if n := v.Remembered(); n != 1 {
		t.Errorf("after the window passed, %d nonces remembered, want 1", n)
	}
}

func TestParse(t *testing.T) {
	good, _ := Sign(newKey(t), "job", "a", "/m", time.Now())
	for _, tc := range []struct {
		name string
		md   metadata.MD
		want error
	}{
		{"none", metadata.MD{}, ErrMissing},
		{"good", good, nil},
		{"no signature", metadata.Pairs(MDClient, "a", MDTime, "1", MDNonce, "00000000000000000000000000000000"), ErrMalformed},
		{"bad time", metadata.Pairs(MDClient, "a", MDTime, "x", MDNonce, "00000000000000000000000000000000", MDSig, good.Get(MDSig)[0]), ErrMalformed},
		{"short nonce", metadata.Pairs(MDClient, "a", MDTime, "1", MDNonce, "00", MDSig, good.Get(MDSig)[0]), ErrMalformed},
		{"short signature", metadata.Pairs(MDClient, "a", MDTime, "1", MDNonce, "00000000000000000000000000000000", MDSig, "AAAA"), ErrMalformed},
		{"two clients", metadata.Join(good, metadata.Pairs(MDClient, "b")), ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse(tc.md); !errors.Is(err, tc.want) {
				t.Errorf("Parse = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestTokens(t *testing.T) {
	a, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewToken()
	if a == b || len(a) != len("tly_")+43 {
		t.Errorf("tokens %q and %q: want distinct, 4+43 characters", a, b)
	}
	if h := TokenHash(a); len(h) != 64 || h == TokenHash(b) {
		t.Errorf("hash %q", h)
	}
}

// TestNoncesBounded: within the window the verifier remembers at most
// MaxPerClient nonces of one client and MaxNonces in all. A genuine call
// beyond either bound is refused with ErrTooManyCalls and recorded
// nowhere; forged calls use up no one's bound; and once calls leave the
// window their client gets in again.
func TestNoncesBounded(t *testing.T) {
	keys := map[string]ed25519.PrivateKey{"a": newKey(t), "b": newKey(t), "c": newKey(t)}
	v := NewVerifier("job", time.Minute)
	v.MaxPerClient, v.MaxNonces = 5, 8
	start := time.Unix(1_800_000_000, 0)
	call := func(signer, client string, at time.Time) error {
		md, err := Sign(keys[signer], "job", client, "/m", at)
		if err != nil {
			t.Fatal(err)
		}
		c, err := Parse(md)
		if err != nil {
			t.Fatal(err)
		}
		return v.Verify(c, keys[client].Public().(ed25519.PublicKey), "/m", at)
	}
	for i := range 5 {
		if err := call("a", "a", start.Add(time.Duration(i)*time.Millisecond)); err != nil {
			t.Fatalf("a's call %d: %v", i, err)
		}
	}
	if err := call("a", "a", start.Add(time.Second)); !errors.Is(err, ErrTooManyCalls) {
		t.Errorf("a's sixth call within the window: %v, want ErrTooManyCalls", err)
	}
	// Calls signed as b with another key fail their signature and leave
	// b's bound whole.
	for range 20 {
		if err := call("a", "b", start.Add(time.Second)); !errors.Is(err, ErrBadSig) {
			t.Fatalf("forged call as b: %v, want ErrBadSig", err)
		}
	}
	for i := range 3 {
		if err := call("b", "b", start.Add(time.Second)); err != nil {
			t.Fatalf("b's call %d: %v", i, err)
		}
	}
	if n := v.Remembered(); n != 8 {
		t.Errorf("remembered %d nonces, want 8 (5 of a, 3 of b)", n)
	}
	if err := call("c", "c", start.Add(time.Second)); !errors.Is(err, ErrTooManyCalls) {
		t.Errorf("c's call with %d nonces remembered in all: %v, want ErrTooManyCalls", v.Remembered(), err)
	}
	if n := v.Remembered(); n != 8 {
		t.Errorf("refused calls left nonces: %d remembered, want 8", n)
	}
	later := start.Add(2*time.Minute + time.Second)
	if err := call("a", "a", later); err != nil {
		t.Errorf("a's call after its earlier calls left the window: %v", err)
	}
	if err := call("c", "c", later); err != nil {
		t.Errorf("c's call after the window passed: %v", err)
	}
	if n := v.Remembered(); n != 2 {
		t.Errorf("after the window passed, %d nonces remembered, want 2", n)
	}
}
