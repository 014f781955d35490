package aggregation

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"slices"
)

// Edge aggregation (package edge, `tally edge`). An edge holds no key: it
// adds its clients' ciphertexts with its own [Accumulator] and hands the
// coordinator one partial sum per block, which has exactly the wire form of
// a client ciphertext (c₀ rounded, c₁ whole), together with each client's
// signed [Submission] and the c₁ rows of each of its ciphertexts. The
// coordinator adds the partial with [Accumulator.AddPartial] and keeps the
// c₁ rows with [SubmissionStore.AddC1]; members then check the aggregate
// as they always do ([Member.VerifyAggregate]): every c₁ against its
// client's signature, and the aggregate's c₁ against Σᵢ c₁ᵢ. An edge that
// alters its partial, or leaves a client out while counting it, is refused
// with [ErrNotASum]; one that alters a client's c₁ to match is refused
// because that c₁ no longer hashes to what the client signed. For the
// influence valuation the edge also computes each client's product
// ([Influence.Add], [Influence.Finalize]); the coordinator takes it as it is
// ([Influence.AddProduct]) and members recompute its c₁ from the client's
// signed c₁ ([ErrProductMismatch]). What the edge can still shift is c₀,
// of the partial and of a product: that moves only the result the
// coordinator itself obtains, as a coordinator that forges c₀ can.

// AddPartial adds ct, the sum of the block ciphertexts of clients made by
// an edge (a ciphertext in the client form, [Aggregate.Ciphertexts] of the
// edge's own accumulator), to the running sum of its block, and counts
// that block as delivered by every one of clients. It validates ct as
// [Accumulator.Add] does; a client that already delivered the block (on
// its own or in another partial) fails with [ErrDuplicate] and nothing is
// added. Whether ct really is the sum of those clients' ciphertexts is for
// the members to check, which they do against the clients' signed c₁.
func (a *Accumulator) AddPartial(clients []string, ct []byte) error {
	if len(clients) == 0 {
		return fmt.Errorf("%w: a partial of no clients", ErrInvalidInput)
	}
	sorted := slices.Clone(clients)
	slices.Sort(sorted)
	if i := slices.IndexFunc(sorted, func(c string) bool { return c == "" }); i >= 0 {
		return fmt.Errorf("%w: empty client id in a partial", ErrInvalidInput)
	}
	if len(slices.Compact(slices.Clone(sorted))) != len(sorted) {
		return fmt.Errorf("%w: a client named twice in a partial", ErrDuplicate)
	}
	info, err := checkContribution(a.params, a.key, a.blocks, "partial of "+sorted[0], ct)
	if err != nil {
		return err
	}
	a.mu.Lock()
	if a.finalized {
		a.mu.Unlock()
		return fmt.Errorf("%w: accumulator already finalised", ErrState)
	}
	for _, c := range sorted {
		if got := a.clients[c]; got != nil && got[info.block] {
			a.mu.Unlock()
			return fmt.Errorf("%w: client %q block %d", ErrDuplicate, c, info.block)
		}
	}
	for _, c := range sorted {
		got := a.clients[c]
		if got == nil {
			got = make([]bool, a.blocks)
			a.clients[c] = got
		}
		got[info.block] = true
		a.received[c]++
		a.counts[info.block]++
	}
	a.mu.Unlock()

	l := a.params.ctLayout()
	moduli := a.params.moduliRows(l)
	sum := a.sums[info.block]
	a.blockMu[info.block].Lock()
	c0, c1 := splitCiphertext(ct)
	rows0 := a.params.c0Rows()
	addRowsMod(sum.Value[0].Coeffs[:rows0], moduli[:rows0], c0)
	addRowsMod(sum.Value[1].Coeffs, moduli, c1)
	a.blockMu[info.block].Unlock()
	return nil
}

// C1Size is the size of the c₁ rows of one client ciphertext, what
// [ContributionC1] returns and [SubmissionStore.AddC1] takes.
func (p Parameters) C1Size() int {
	return (p.ckks.MaxLevel() + 1) * p.ckks.N() * 8
}

// AddC1 keeps c1, the c₁ rows of client's ciphertext for block as an edge
// forwarded them, after its submission was Put, where the store keeps
// rows: in its spill file, or in memory (c1 itself, not a copy: the
// caller gives it up). Only the size is checked here: the
// coordinator does not hash it, members do, against the digest the client
// signed. The first one kept stays, as in [SubmissionStore.AddBlock].
func (st *SubmissionStore) AddC1(p Parameters, client string, block int, c1 []byte) error {
	if len(c1) != p.C1Size() {
		return fmt.Errorf("%w: c1 of client %q block %d: %d bytes, want %d", ErrMalformed, client, block, len(c1), p.C1Size())
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	s, ok := st.subs[client]
	if !ok || block < 0 || block >= len(s.c1) {
		return fmt.Errorf("%w: no submission of client %q covers block %d", ErrUnknownContributor, client, block)
	}
	// Where the store keeps rows, its spill file too (members are served
	// from there).
	return st.keep(s, block, c1, false)
}

// AddProduct takes client's finished influence ciphertext as an edge
// computed it ([Influence.Finalize] on the edge, c₀ already lifted), so
// that [Influence.Finalize] returns it unchanged, with its digest. With
// [Influence.SpillTo] a spilling store, it goes to the store's spill file
// at once, as a client's own finished ciphertext does, and the heap keeps
// none of it (ct stays the caller's); otherwise a copy is kept. It is
// validated as members parse it (key instance, gradient scale, block
// count); a client that already has ciphertexts or a product here fails
// with [ErrDuplicate]. Whether it is the product of the client's signed
// update is for the members to check ([ErrProductMismatch]).
func (f *Influence) AddProduct(client string, ct []byte) error {
	if client == "" {
		return fmt.Errorf("%w: empty client id", ErrInvalidInput)
	}
	_, info, err := parseInfluence(f.params, ct)
	if err != nil {
		return fmt.Errorf("influence product of %q: %w", client, err)
	}
	switch {
	case info.key != f.key:
		return fmt.Errorf("%w: influence product of %q under key instance %x, expected %x", ErrKeyMismatch, client, info.key[:8], f.key[:8])
	case info.blocks != f.blocks:
		return fmt.Errorf("%w: influence product of %q sums %d blocks, the update has %d", ErrBlockMismatch, client, info.blocks, f.blocks)
	case info.logScale != f.logScale:
		return fmt.Errorf("%w: influence product of %q at gradient scale 2^%d, the round's is 2^%d", ErrGradientMismatch, client, info.logScale, f.logScale)
	}
	f.mu.Lock()
	_, dup := f.clients[client]
	store, parks := f.store, f.parks
	f.mu.Unlock()
	if dup {
		return fmt.Errorf("%w: influence of client %q", ErrDuplicate, client)
	}
	st := &influenceClient{n: f.blocks, fromEdge: true}
	if parks {
		// Written before the client is recorded, so that f.mu is not held
		// over the write; a duplicate racing this one leaves its bytes
		// unused in the file.
		ref, ok, err := store.keepProduct(ct)
		if err != nil {
			return fmt.Errorf("influence product of %q: %w", client, err)
		}
		if ok {
			st.fin = &Product{Client: client, Digest: sha256.Sum256(ct), Size: len(ct), store: store, ref: ref}
		}
	}
	if st.fin == nil {
		st.product = bytes.Clone(ct)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.clients[client]; ok {
		return fmt.Errorf("%w: influence of client %q", ErrDuplicate, client)
	}
	f.clients[client] = st
	return nil
}

// finalizeProduct is Finalize for a client whose product came whole from
// an edge: no lift, it was lifted where it was computed.
func (st *influenceClient) finalizeProduct() ([]byte, [32]byte) {
	out := st.product
	st.done, st.product = true, nil
	return out, sha256.Sum256(out)
}

// CheckContribution validates one client ciphertext as [Accumulator.Add]
// does (parameters, key instance, level, size, reduction of every
// coefficient, block index and count) without adding it anywhere: an
// edge checks every block of an upload before any touches its partial.
func (p Parameters) CheckContribution(key [32]byte, blocks int, client string, ct []byte) error {
	_, err := checkContribution(p, key, blocks, client, ct)
	return err
}

// CheckPartial is the validation [Accumulator.AddPartial] runs, without
// adding: the coordinator checks every block of an edge's partial before
// any touches its sums.
func (a *Accumulator) CheckPartial(clients []string, ct []byte) error {
	if len(clients) == 0 {
		return fmt.Errorf("%w: a partial of no clients", ErrInvalidInput)
	}
	info, err := checkContribution(a.params, a.key, a.blocks, "partial of "+clients[0], ct)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range clients {
		if got := a.clients[c]; got != nil && got[info.block] {
			return fmt.Errorf("%w: client %q block %d", ErrDuplicate, c, info.block)
		}
	}
	return nil
}
