package aggregation

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// ErrSpillCorrupt reports c₁ rows that a [SubmissionStore] read back from
// its spill file and that are not the bytes it wrote there (a disk error,
// or a file changed under the coordinator): they are not served, since
// they are not what the client signed.
var ErrSpillCorrupt = errors.New("aggregation: c1 read back from the spill file differs from what was kept")

// ErrProductSpillCorrupt reports a client's influence ciphertext
// ([Product]) that a [SubmissionStore] read back from its spill file and
// that is not what it wrote there: it is neither served to members nor
// combined, since its digest is what the round's request commits to.
var ErrProductSpillCorrupt = errors.New("aggregation: influence ciphertext read back from the spill file differs from what was written")

// ErrCiphertextSpillCorrupt reports a client's whole ciphertext
// ([SubmissionStore.SpillCiphertext], the projection mode's) that a
// [SubmissionStore] read back from its spill file and that is not what it
// wrote there: no product is computed from it, since it is not what the
// client signed.
var ErrCiphertextSpillCorrupt = errors.New("aggregation: ciphertext read back from the spill file differs from what was written")

// SpillFile is where a [SubmissionStore] keeps c₁ rows off the heap: an
// *os.File opened for reading and writing is one. The store writes each
// c₁ once, at the end of what it wrote before, and reads it back
// concurrently (ReadAt must be safe for concurrent use, as *os.File's
// is); Close is called once, by [SubmissionStore.Close].
type SpillFile interface {
	io.ReaderAt
	io.WriterAt
	io.Closer
}

// castagnoli is the CRC-32C table: hardware-accelerated on amd64 and arm64,
// so checking what is read back costs far less than serving it.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// spillRef locates one kept c₁ in the spill file.
type spillRef struct {
	off int64
	n   int
	crc uint32
}

// spill is the file state of a spilling store, guarded by the store's mu.
type spill struct {
	f      SpillFile
	end    int64
	closed bool
}

// NewSpillingSubmissionStore returns an empty store that keeps the c₁
// rows in f instead of in memory: the heap then holds only the signed
// statements (under a kilobyte per client), whatever the number of
// clients, and the rows stay in the page cache, which the kernel may
// write out under memory pressure. Each c₁ carries a CRC-32C of what was
// written, checked on every read ([ErrSpillCorrupt]); members check every
// c₁ against its client's signed digest in any case. The store owns f
// from now on: [SubmissionStore.Close] closes it.
func NewSpillingSubmissionStore(f SpillFile) *SubmissionStore {
	st := NewSubmissionStore()
	st.spill = &spill{f: f}
	return st
}

// keep writes b (a c₁, an influence ciphertext or a whole one) at the end of the
// spill file. Called with st.mu held.
func (sp *spill) keep(b []byte) (spillRef, error) {
	if sp.closed {
		return spillRef{}, fmt.Errorf("%w: the submission store was closed", ErrState)
	}
	n, err := sp.f.WriteAt(b, sp.end)
	if err != nil {
		return spillRef{}, fmt.Errorf("aggregation: write %d bytes to the spill file: %w", len(b), err)
	}
	if n != len(b) {
		return spillRef{}, fmt.Errorf("aggregation: write to the spill file: wrote %d of %d bytes", n, len(b))
	}
	ref := spillRef{off: sp.end, n: len(b), crc: crc32.Checksum(b, castagnoli)}
	sp.end += int64(len(b))
	return ref, nil
}

// read reads ref back into buf (grown if short) and checks it; a CRC that
// differs is reported as corrupt, which names what was kept.
func (sp *spill) read(ref spillRef, buf []byte, corrupt error) ([]byte, error) {
	if cap(buf) < ref.n {
		buf = make([]byte, ref.n)
	}
	buf = buf[:ref.n]
	if _, err := sp.f.ReadAt(buf, ref.off); err != nil {
		return nil, fmt.Errorf("aggregation: read %d spilled bytes at offset %d: %w", ref.n, ref.off, err)
	}
	if got := crc32.Checksum(buf, castagnoli); got != ref.crc {
		return nil, fmt.Errorf("%w: %d bytes at offset %d have CRC-32C %08x, %08x was written", corrupt, ref.n, ref.off, got, ref.crc)
	}
	return buf, nil
}

// Close releases what the store holds: it closes a spill file (whose name,
// if it had one, its creator removes), after which the store serves no
// c₁ and keeps none. Closing twice, or closing a store in memory, does
// nothing.
func (st *SubmissionStore) Close() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.spill == nil || st.spill.closed {
		return nil
	}
	st.spill.closed = true
	return st.spill.f.Close()
}

// Kept reports whether the c₁ of client's block was kept.
func (st *SubmissionStore) Kept(client string, block int) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	s, ok := st.subs[client]
	return ok && block >= 0 && block < len(s.c1) && s.kept(block)
}

// ReadContribution returns the c₁ rows kept for client's block, read into
// buf when the store spills (buf is grown if too short; nil allocates),
// or the kept slice itself, not to be changed, when it does not.
func (st *SubmissionStore) ReadContribution(client string, block int, buf []byte) ([]byte, error) {
	st.mu.Lock()
	s, ok := st.subs[client]
	if !ok || block < 0 || block >= len(s.c1) || !s.kept(block) {
		st.mu.Unlock()
		return nil, fmt.Errorf("%w: no c1 of client %q's block %d was kept", ErrUnknownContributor, client, block)
	}
	if st.spill == nil {
		c1 := s.c1[block]
		st.mu.Unlock()
		return c1, nil
	}
	if st.spill.closed {
		st.mu.Unlock()
		return nil, fmt.Errorf("%w: the submission store was closed", ErrState)
	}
	sp, ref := st.spill, s.spilled[block]
	st.mu.Unlock()
	// Read outside the lock: uploads keep going while members download.
	// A Close meanwhile makes ReadAt fail, which is what it should do.
	return sp.read(ref, buf, ErrSpillCorrupt)
}

// keepProduct writes a client's finished influence ciphertext (or its whole
// ciphertext, SpillCiphertext) to the spill file; ok is false for a store
// in memory, which keeps none.
func (st *SubmissionStore) keepProduct(ct []byte) (ref spillRef, ok bool, err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.spill == nil {
		return spillRef{}, false, nil
	}
	ref, err = st.spill.keep(ct)
	return ref, err == nil, err
}

// keepParked writes a running influence ciphertext to slot, its client's
// place in the spill file, rewritten in place each time it is parked; a
// zero slot is allocated at the end of the file.
func (st *SubmissionStore) keepParked(slot spillRef, b []byte) (spillRef, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if slot.n == 0 {
		return st.spill.keep(b)
	}
	if st.spill.closed {
		return spillRef{}, fmt.Errorf("%w: the submission store was closed", ErrState)
	}
	if len(b) != slot.n {
		return spillRef{}, fmt.Errorf("aggregation: rewrite %d bytes into a spill slot of %d", len(b), slot.n)
	}
	n, err := st.spill.f.WriteAt(b, slot.off)
	if err != nil {
		return spillRef{}, fmt.Errorf("aggregation: rewrite %d bytes at offset %d of the spill file: %w", len(b), slot.off, err)
	}
	if n != len(b) {
		return spillRef{}, fmt.Errorf("aggregation: rewrite at offset %d of the spill file: wrote %d of %d bytes", slot.off, n, len(b))
	}
	slot.crc = crc32.Checksum(b, castagnoli)
	return slot, nil
}

// readProduct reads back what keepProduct wrote, into buf.
func (st *SubmissionStore) readProduct(ref spillRef, buf []byte) ([]byte, error) {
	return st.readSpilled(ref, buf, ErrProductSpillCorrupt)
}

// readSpilled reads ref back from the spill file into buf, checked; a
// difference is reported as corrupt.
func (st *SubmissionStore) readSpilled(ref spillRef, buf []byte, corrupt error) ([]byte, error) {
	st.mu.Lock()
	if st.spill.closed {
		st.mu.Unlock()
		return nil, fmt.Errorf("%w: the submission store was closed", ErrState)
	}
	sp := st.spill
	st.mu.Unlock()
	return sp.read(ref, buf, corrupt)
}

// SpilledCiphertext is a client's whole ciphertext that
// [SubmissionStore.SpillCiphertext] wrote to the store's spill file, to be
// read back (checked) while the store is open. Safe for concurrent use.
type SpilledCiphertext struct {
	store *SubmissionStore
	ref   spillRef
}

// SpillCiphertext writes a copy of a client's whole ciphertext ct to the
// store's spill file, for a caller that needs it again later in the round
// (the projection mode computes its products only once the total is
// decrypted). ok is false for a store in memory, which writes nothing: the
// caller keeps ct itself. The bytes can be read until the store is closed.
func (st *SubmissionStore) SpillCiphertext(ct []byte) (c SpilledCiphertext, ok bool, err error) {
	ref, ok, err := st.keepProduct(ct)
	if !ok {
		return SpilledCiphertext{}, false, err
	}
	return SpilledCiphertext{store: st, ref: ref}, true, nil
}

// Size is the length of the ciphertext.
func (c SpilledCiphertext) Size() int { return c.ref.n }

// Read returns the ciphertext read into buf (grown if short; nil
// allocates), checked against the CRC-32C of what was written
// ([ErrCiphertextSpillCorrupt]), or [ErrState] once the store is closed.
func (c SpilledCiphertext) Read(buf []byte) ([]byte, error) {
	if c.store == nil {
		return nil, fmt.Errorf("%w: no ciphertext was spilled", ErrState)
	}
	return c.store.readSpilled(c.ref, buf, ErrCiphertextSpillCorrupt)
}
