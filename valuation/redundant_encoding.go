package valuation

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// ErrRedundancyEncoding is returned by Redundancy.UnmarshalBinary for
// bytes that are not an accumulator this package wrote; the message names
// what was wrong and where.
var ErrRedundancyEncoding = errors.New("valuation: malformed redundancy accumulator")

// redundancyVersion is the first byte of Redundancy.MarshalBinary.
const redundancyVersion = 1

// MarshalBinary encodes the accumulator so that a restarted coordinator
// can go on adding rounds to it. The bytes are deterministic (equal
// accumulators encode to equal bytes): a version byte (1); the number of
// clients and their ids, in increasing order, each as a length and its
// bytes; the number of pairs and, for each pair in increasing order of
// (i, j), the two clients' indices i < j and the two sums Σ‖Δ_i − Δ_j‖²
// and Σ max(‖Δ_i‖², ‖Δ_j‖²) as little-endian float64. Lengths, counts and
// indices are unsigned varints. A pair costs 18 bytes up to 128 clients
// (20 beyond), each client's id its length and one byte once: a job of
// 100 clients with ids of 8 bytes stores 4,950 pairs in about 90 kB.
func (r *Redundancy) MarshalBinary() ([]byte, error) {
	keys := make([][2]string, 0, len(r.pairs))
	seen := map[string]bool{}
	var ids []string
	for k := range r.pairs {
		keys = append(keys, k)
		for _, id := range k {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
	}
	slices.Sort(ids)
	slices.SortFunc(keys, func(a, b [2]string) int {
		return cmp.Or(strings.Compare(a[0], b[0]), strings.Compare(a[1], b[1]))
	})
	at := make(map[string]uint64, len(ids))
	b := []byte{redundancyVersion}
	b = binary.AppendUvarint(b, uint64(len(ids)))
	for i, id := range ids {
		at[id] = uint64(i)
		b = binary.AppendUvarint(b, uint64(len(id)))
		b = append(b, id...)
	}
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		p := r.pairs[k]
		b = binary.AppendUvarint(b, at[k[0]])
		b = binary.AppendUvarint(b, at[k[1]])
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(p.dist2))
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(p.norm2))
	}
	return b, nil
}

// UnmarshalBinary replaces the accumulator's contents with those encoded
// by MarshalBinary. It refuses, with ErrRedundancyEncoding naming what was
// wrong, an unknown version, a truncated or overlong encoding, ids out of
// order or repeated, an id in no pair, an index out of range, pairs out of
// order or repeated, a sum that is negative or not finite, and bytes that
// decode but are not what MarshalBinary writes; r is then left as it was.
func (r *Redundancy) UnmarshalBinary(data []byte) error {
	d := decoder{b: data}
	if len(data) == 0 {
		return fmt.Errorf("%w: no bytes", ErrRedundancyEncoding)
	}
	if v := d.b[0]; v != redundancyVersion {
		return fmt.Errorf("%w: version %d, want %d", ErrRedundancyEncoding, v, redundancyVersion)
	}
	d.off = 1
	n, err := d.uvarint("the number of clients")
	if err != nil {
		return err
	}
	// Every id takes at least one byte (its length).
	if n > uint64(len(data)-d.off) {
		return fmt.Errorf("%w: %d clients in %d bytes", ErrRedundancyEncoding, n, len(data))
	}
	ids := make([]string, n)
	for i := range ids {
		l, err := d.uvarint(fmt.Sprintf("the length of client %d's id", i))
		if err != nil {
			return err
		}
		if l > uint64(len(data)-d.off) {
			return fmt.Errorf("%w: client %d's id of %d bytes at byte %d, %d left", ErrRedundancyEncoding, i, l, d.off, len(data)-d.off)
		}
		ids[i] = string(data[d.off : d.off+int(l)])
		d.off += int(l)
		if i > 0 && ids[i] <= ids[i-1] {
			return fmt.Errorf("%w: client id %q after %q (ids must be increasing)", ErrRedundancyEncoding, ids[i], ids[i-1])
		}
	}
	np, err := d.uvarint("the number of pairs")
	if err != nil {
		return err
	}
	// Every pair takes at least 18 bytes.
	if np > uint64(len(data)-d.off)/18 {
		return fmt.Errorf("%w: %d pairs in the %d bytes left", ErrRedundancyEncoding, np, len(data)-d.off)
	}
	pairs := make(map[[2]string]*pairDistance, np)
	used := make([]bool, n)
	var last [2]uint64
	for k := uint64(0); k < np; k++ {
		var ij [2]uint64
		for s := range ij {
			if ij[s], err = d.uvarint(fmt.Sprintf("pair %d's client index", k)); err != nil {
				return err
			}
			if ij[s] >= n {
				return fmt.Errorf("%w: pair %d names client %d of %d", ErrRedundancyEncoding, k, ij[s], n)
			}
		}
		if ij[0] >= ij[1] {
			return fmt.Errorf("%w: pair %d is (%d, %d), want i < j", ErrRedundancyEncoding, k, ij[0], ij[1])
		}
		if k > 0 && (ij[0] < last[0] || ij[0] == last[0] && ij[1] <= last[1]) {
			return fmt.Errorf("%w: pair %d (%d, %d) after (%d, %d) (pairs must be increasing)", ErrRedundancyEncoding, k, ij[0], ij[1], last[0], last[1])
		}
		last = ij
		var sums [2]float64
		for s, what := range []string{"distance", "norm"} {
			if len(data)-d.off < 8 {
				return fmt.Errorf("%w: pair %d's %s sum truncated at byte %d", ErrRedundancyEncoding, k, what, d.off)
			}
			sums[s] = math.Float64frombits(binary.LittleEndian.Uint64(data[d.off:]))
			d.off += 8
			if !(sums[s] >= 0) || math.Signbit(sums[s]) || math.IsInf(sums[s], 0) {
				return fmt.Errorf("%w: pair (%s, %s)'s %s sum is %g, not finite and non-negative (nor -0)", ErrRedundancyEncoding, ids[ij[0]], ids[ij[1]], what, sums[s])
			}
		}
		used[ij[0]], used[ij[1]] = true, true
		pairs[[2]string{ids[ij[0]], ids[ij[1]]}] = &pairDistance{dist2: sums[0], norm2: sums[1]}
	}
	if d.off != len(data) {
		return fmt.Errorf("%w: %d bytes after the last pair", ErrRedundancyEncoding, len(data)-d.off)
	}
	for i, u := range used {
		if !u {
			return fmt.Errorf("%w: client %q is in no pair", ErrRedundancyEncoding, ids[i])
		}
	}
	// What is left: varints longer than they need be.
	got := &Redundancy{pairs: pairs}
	if canon, _ := got.MarshalBinary(); !bytes.Equal(canon, data) {
		return fmt.Errorf("%w: not in canonical form (a varint longer than needed)", ErrRedundancyEncoding)
	}
	r.pairs = pairs
	return nil
}

type decoder struct {
	b   []byte
	off int
}

func (d *decoder) uvarint(what string) (uint64, error) {
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		return 0, fmt.Errorf("%w: %s at byte %d is truncated or overflows", ErrRedundancyEncoding, what, d.off)
	}
	d.off += n
	return v, nil
}
