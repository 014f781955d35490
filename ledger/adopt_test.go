package ledger

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"path/filepath"
	"testing"
)

// TestAdoptSigningKey: a new file takes the key given; the same key again
// is accepted; a file holding another key is refused and keeps its own.
func TestAdoptSigningKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	if err := db.AdoptSigningKey(key); err != nil {
		t.Fatal(err)
	}
	if err := db.AdoptSigningKey(key); err != nil {
		t.Fatalf("the same key again: %v", err)
	}
	if got, _ := db.SigningKey(); !got.Equal(key) {
		t.Fatal("the file does not sign with the adopted key")
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	if err := db.AdoptSigningKey(other); !errors.Is(err, ErrOtherKey) {
		t.Fatalf("another key: %v, want %v", err, ErrOtherKey)
	}
	if got, _ := db.SigningKey(); !got.Equal(key) {
		t.Fatal("a refused key replaced the file's")
	}
}

// TestReceiptTimestamp: a receipt's IssuedAt is covered by its hash (v2
// encoding); one without keeps the v1 encoding it always had.
func TestReceiptTimestamp(t *testing.T) {
	r := Receipt{Seq: 1, Job: "j", Round: 1, Client: "c", Method: "m", Mode: "plain"}
	v1 := r.ComputeHash()
	if string(r.Canonical()[:len(canonicalTag)]) != canonicalTag {
		t.Fatal("a receipt without a timestamp is not encoded as v1")
	}
	r.IssuedAt = 1764614400000
	v2 := r.ComputeHash()
	r.IssuedAt++
	if v2 == v1 || r.ComputeHash() == v2 {
		t.Fatal("the timestamp is not covered by the receipt's hash")
	}
}
