package engine

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/tallyfl/tally/aggregation"
)

// keptCase adds blocks ciphertexts (random bytes of size: the store does
// not parse them) of each of clients to a CiphertextStore over a spilling
// submission store, client by client, and returns them with the spill file.
func keptCase(t *testing.T, clients, blocks, size int) (*CiphertextStore, *aggregation.SubmissionStore, *os.File, [][][]byte) {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "kept-*")
	if err != nil {
		t.Fatal(err)
	}
	st := aggregation.NewSpillingSubmissionStore(f)
	t.Cleanup(func() { st.Close() })
	s := NewCiphertextStore(blocks, st)
	rng := rand.New(rand.NewPCG(1, 19))
	cts := make([][][]byte, clients)
	for c := range cts {
		for b := range blocks {
			ct := make([]byte, size)
			for i := range ct {
				ct[i] = byte(rng.Uint32())
			}
			cts[c] = append(cts[c], ct)
			if err := s.Add(fmt.Sprintf("c%d", c), b, ct); err != nil {
				t.Fatal(err)
			}
		}
	}
	return s, st, f, cts
}

// Issue 19: in the projection mode every client's whole ciphertexts stayed
// on the heap until the products were computed. Over a spilling store the
// CiphertextStore holds none of their bytes: they are in the spill file,
// and read back as they were added; the first one added for a block stays.
func TestCiphertextStoreKeepsCiphertextsOffTheHeap(t *testing.T) {
	const clients, blocks, size = 3, 4, 1000
	s, _, f, cts := keptCase(t, clients, blocks, size)
	for id, c := range s.cts {
		for b, k := range c {
			if k == nil || k.mem != nil {
				t.Fatalf("%s block %d: kept in memory, not in the spill file", id, b)
			}
		}
	}
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(clients * blocks * size); fi.Size() != want {
		t.Fatalf("spill file holds %d bytes, want the %d of every ciphertext", fi.Size(), want)
	}
	if err := s.Add("c0", 1, make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	var buf []byte
	for c := range clients {
		id := fmt.Sprintf("c%d", c)
		if !s.complete(id) {
			t.Fatalf("%s: not every ciphertext kept", id)
		}
		for b := range blocks {
			got, err := s.read(id, b, buf)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, cts[c][b]) {
				t.Fatalf("%s block %d: read back other bytes than were added", id, b)
			}
			buf = got
		}
	}
	if s.complete("c9") {
		t.Fatal("a client that sent nothing is complete")
	}
	if err := s.Add("c0", blocks, cts[0][0]); err == nil {
		t.Fatal("a block past the update's last was kept")
	}
}

// The adversary is the disk, or whoever writes to the spill file: one byte
// of a client's kept ciphertext changed under the coordinator. It is not
// read back (no product is computed from bytes the client did not sign):
// ErrCiphertextSpillCorrupt, while the other blocks still read intact. Once
// the store is closed nothing is read.
func TestCiphertextStoreRefusesChangedBytes(t *testing.T) {
	const clients, blocks, size = 2, 3, 1000
	s, st, f, cts := keptCase(t, clients, blocks, size)
	// Client c1's block 2 is the last written.
	off := int64((clients*blocks - 1) * size)
	one := []byte{^cts[1][2][7]}
	if _, err := f.WriteAt(one, off+7); err != nil {
		t.Fatal(err)
	}
	if _, err := s.read("c1", 2, nil); !errors.Is(err, aggregation.ErrCiphertextSpillCorrupt) {
		t.Fatalf("changed byte: err = %v, want ErrCiphertextSpillCorrupt", err)
	}
	got, err := s.read("c1", 1, nil)
	if err != nil || !bytes.Equal(got, cts[1][1]) {
		t.Fatalf("an unchanged block next to it: err = %v, equal = %v", err, bytes.Equal(got, cts[1][1]))
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.read("c0", 0, nil); !errors.Is(err, aggregation.ErrState) {
		t.Fatalf("after Close: err = %v, want ErrState", err)
	}
}

// A store in memory (no spill file, or none given) keeps the copies on
// the heap, as before, and a caller that changes its slice after Add does
// not change what is kept.
func TestCiphertextStoreInMemory(t *testing.T) {
	for _, st := range []*aggregation.SubmissionStore{nil, aggregation.NewSubmissionStore()} {
		s := NewCiphertextStore(1, st)
		ct := []byte{1, 2, 3}
		if err := s.Add("c0", 0, ct); err != nil {
			t.Fatal(err)
		}
		ct[0] = 9
		got, err := s.read("c0", 0, nil)
		if err != nil || !bytes.Equal(got, []byte{1, 2, 3}) {
			t.Fatalf("read %v, %v; want [1 2 3]", got, err)
		}
		if s.cts["c0"][0].mem == nil {
			t.Fatal("a store without a spill file kept nothing in memory")
		}
	}
}
