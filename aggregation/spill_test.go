package aggregation

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// spillCase signs three blocks of client c00 and returns a store in memory
// and a spilling one holding them, and the spill file.
func spillCase(t *testing.T) (mem, spilled *SubmissionStore, f *os.File, cts [][]byte) {
	t.Helper()
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	enc, err := NewEncryptor(params, cm.pk, 1)
	if err != nil {
		t.Fatal(err)
	}
	if cts, err = enc.EncryptUpdate(update(1, 1500), 3); err != nil {
		t.Fatal(err)
	}
	sub, err := NewSubmission(params, "job", "c00", 1, 0, 3, cts, cm.clientKey("c00"))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := sub.MarshalBinary()
	if f, err = os.CreateTemp(t.TempDir(), "c1-*"); err != nil {
		t.Fatal(err)
	}
	mem, spilled = NewSubmissionStore(), NewSpillingSubmissionStore(f)
	t.Cleanup(func() { spilled.Close() })
	for _, st := range []*SubmissionStore{mem, spilled} {
		if err := st.Put("c00", raw, sub); err != nil {
			t.Fatal(err)
		}
		for b, ct := range cts {
			if err := st.AddBlock("c00", b, ct); err != nil {
				t.Fatal(err)
			}
		}
	}
	return mem, spilled, f, cts
}

// A spilling store serves the same c₁ rows as one in memory, from its file:
// what is read back is what the client signed.
func TestSpillingStoreServesWhatWasKept(t *testing.T) {
	mem, spilled, f, cts := spillCase(t)
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(len(cts) * len(ContributionC1(cts[0]))); fi.Size() != want {
		t.Fatalf("spill file holds %d bytes, want the %d of every c1", fi.Size(), want)
	}
	var buf []byte
	for b, ct := range cts {
		want, ok := mem.Contribution("c00", b)
		if !ok || !bytes.Equal(want, ContributionC1(ct)) {
			t.Fatalf("block %d: the store in memory does not serve the c1 kept", b)
		}
		got, err := spilled.ReadContribution("c00", b, buf)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("block %d: the spilling store serves other bytes than it kept", b)
		}
		buf = got
	}
	if _, err := spilled.ReadContribution("c01", 0, nil); !errors.Is(err, ErrUnknownContributor) {
		t.Fatalf("unknown client: err = %v, want ErrUnknownContributor", err)
	}
	if _, err := spilled.ReadContribution("c00", len(cts), nil); !errors.Is(err, ErrUnknownContributor) {
		t.Fatalf("block past the last: err = %v, want ErrUnknownContributor", err)
	}
}

// The adversary here is the disk, or whoever writes to the spill file:
// one byte of a kept c₁ changed under the store. The store refuses to
// serve it (ErrSpillCorrupt) rather than relay bytes the client did not
// sign; the other blocks are still served.
func TestSpillingStoreRefusesChangedBytes(t *testing.T) {
	_, spilled, f, cts := spillCase(t)
	n := int64(len(ContributionC1(cts[0])))
	one := make([]byte, 1)
	if _, err := f.ReadAt(one, n+17); err != nil {
		t.Fatal(err)
	}
	one[0] ^= 0x40
	if _, err := f.WriteAt(one, n+17); err != nil {
		t.Fatal(err)
	}
	if _, err := spilled.ReadContribution("c00", 1, nil); !errors.Is(err, ErrSpillCorrupt) {
		t.Fatalf("changed byte in block 1: err = %v, want ErrSpillCorrupt", err)
	}
	if _, ok := spilled.Contribution("c00", 1); ok {
		t.Fatal("Contribution serves a block whose bytes changed on disk")
	}
	if _, err := spilled.ReadContribution("c00", 0, nil); err != nil {
		t.Fatalf("block 0, unchanged: %v", err)
	}
}

// Once closed (the round's decryptions are done), a spilling store serves
// nothing and keeps nothing, and its file is closed.
func TestSpillingStoreClose(t *testing.T) {
	_, spilled, f, cts := spillCase(t)
	if err := spilled.Close(); err != nil {
		t.Fatal(err)
	}
	if err := spilled.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := spilled.ReadContribution("c00", 0, nil); !errors.Is(err, ErrState) {
		t.Fatalf("read after Close: err = %v, want ErrState", err)
	}
	if _, err := f.Stat(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("spill file after Close: Stat err = %v, want os.ErrClosed", err)
	}
	// A block that arrives late (an upload racing the round's end) is
	// refused, not written to a closed file.
	raw, sub, _ := spilled.Submission("c00")
	if err := spilled.Put("c01", raw, sub); err != nil {
		t.Fatal(err)
	}
	if err := spilled.AddBlock("c01", 0, cts[0]); !errors.Is(err, ErrState) {
		t.Fatalf("AddBlock after Close: err = %v, want ErrState", err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(f.Name())); len(entries) != 1 {
		t.Fatalf("spill dir holds %d entries; the store must not create files of its own", len(entries))
	}
}

// The replacement rule holds when the blocks are spilled: a second
// statement is refused once a block under the first was kept.
func TestSpillingStoreKeepsFirstStatement(t *testing.T) {
	_, spilled, _, _ := spillCase(t)
	raw, _, _ := spilled.Submission("c00")
	other := bytes.Clone(raw)
	other[len(other)-1] ^= 1
	var sub Submission
	if err := sub.UnmarshalBinary(raw); err != nil {
		t.Fatal(err)
	}
	if err := spilled.Put("c00", other, &sub); !errors.Is(err, ErrSubmissionMismatch) {
		t.Fatalf("another statement after spilled blocks: err = %v, want ErrSubmissionMismatch", err)
	}
}

// TestSpillingStoreKeepsEdgeC1: the c₁ rows an edge forwards (AddC1) are
// served from the store's spill file like an upload's. They were kept in
// memory, where a spilling store never looks, so every member of an
// edge job read "no c1 of client … was kept" and refused the round.
func TestSpillingStoreKeepsEdgeC1(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	enc, err := NewEncryptor(params, cm.pk, 1)
	if err != nil {
		t.Fatal(err)
	}
	cts, err := enc.EncryptUpdate(update(2, 1500), 3)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := NewSubmission(params, "job", "c01", 1, 0, 3, cts, cm.clientKey("c01"))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := sub.MarshalBinary()
	f, err := os.CreateTemp(t.TempDir(), "c1-*")
	if err != nil {
		t.Fatal(err)
	}
	st := NewSpillingSubmissionStore(f)
	t.Cleanup(func() { st.Close() })
	if err := st.Put("c01", raw, sub); err != nil {
		t.Fatal(err)
	}
	for b, ct := range cts {
		if err := st.AddC1(params, "c01", b, bytes.Clone(ContributionC1(ct))); err != nil {
			t.Fatal(err)
		}
	}
	for b, ct := range cts {
		got, err := st.ReadContribution("c01", b, nil)
		if err != nil || !bytes.Equal(got, ContributionC1(ct)) {
			t.Fatalf("block %d forwarded by an edge: read back %d bytes, err %v; want its c1", b, len(got), err)
		}
	}
}

// Whole ciphertexts (the projection mode's, SpillCiphertext) share the
// spill file with the c₁ rows: each reads back as it was written, beside
// the c₁ still served intact; a changed byte is ErrCiphertextSpillCorrupt;
// a store in memory writes nothing and says so.
func TestSpillingStoreKeepsWholeCiphertexts(t *testing.T) {
	mem, spilled, f, cts := spillCase(t)
	if _, ok, err := mem.SpillCiphertext(cts[0]); ok || err != nil {
		t.Fatalf("a store in memory: ok = %v, err = %v; want false, nil", ok, err)
	}
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	kept := make([]SpilledCiphertext, len(cts))
	for b, ct := range cts {
		c, ok, err := spilled.SpillCiphertext(ct)
		if !ok || err != nil {
			t.Fatalf("block %d: ok = %v, err = %v", b, ok, err)
		}
		if c.Size() != len(ct) {
			t.Fatalf("block %d: size %d, want %d", b, c.Size(), len(ct))
		}
		kept[b] = c
	}
	var buf []byte
	for b, ct := range cts {
		got, err := kept[b].Read(buf)
		if err != nil || !bytes.Equal(got, ct) {
			t.Fatalf("block %d: read back other bytes (err %v)", b, err)
		}
		buf = got
		if c1, err := spilled.ReadContribution("c00", b, nil); err != nil || !bytes.Equal(c1, ContributionC1(ct)) {
			t.Fatalf("block %d: its c1 no longer reads back intact (err %v)", b, err)
		}
	}
	// Block 1's whole ciphertext starts after the c₁ rows and block 0's.
	off := fi.Size() + int64(len(cts[0])) + 5
	one := make([]byte, 1)
	if _, err := f.ReadAt(one, off); err != nil {
		t.Fatal(err)
	}
	one[0] ^= 0x40
	if _, err := f.WriteAt(one, off); err != nil {
		t.Fatal(err)
	}
	if _, err := kept[1].Read(nil); !errors.Is(err, ErrCiphertextSpillCorrupt) {
		t.Fatalf("changed byte: err = %v, want ErrCiphertextSpillCorrupt", err)
	}
	if _, err := kept[0].Read(nil); err != nil {
		t.Fatalf("block 0, unchanged: %v", err)
	}
	if err := spilled.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := kept[0].Read(nil); !errors.Is(err, ErrState) {
		t.Fatalf("read after Close: err = %v, want ErrState", err)
	}
	if _, _, err := spilled.SpillCiphertext(cts[0]); !errors.Is(err, ErrState) {
		t.Fatalf("spill after Close: err = %v, want ErrState", err)
	}
	if _, err := (SpilledCiphertext{}).Read(nil); !errors.Is(err, ErrState) {
		t.Fatalf("zero SpilledCiphertext: err = %v, want ErrState", err)
	}
}
