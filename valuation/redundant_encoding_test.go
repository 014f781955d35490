package valuation

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"
)

func accumulated(t *testing.T) *Redundancy {
	t.Helper()
	r := NewRedundancy()
	rounds := []struct {
		ids     []string
		updates [][]float64
	}{
		{[]string{"c3", "c1", "c2"}, [][]float64{{1, 0.5}, {1, 0}, {0, 1}}},
		{[]string{"c1", "c3"}, [][]float64{{0.5, 0.5}, {0.5, 0.25}}},
		{[]string{"c2", "zero"}, [][]float64{{1, 1}, {0, 0}}},
	}
	for _, rd := range rounds {
		if err := r.Add(rd.ids, rd.updates); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// TestRedundancyBinaryRoundTrip: an accumulator decoded from its bytes
// has the same distances, encodes to the same bytes, and goes on adding
// rounds as the original does; equal accumulators built in another order
// encode to the same bytes.
func TestRedundancyBinaryRoundTrip(t *testing.T) {
	r := accumulated(t)
	b, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got Redundancy
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	ids := []string{"c1", "c2", "c3", "zero", "absent"}
	for i, a := range ids {
		for _, c := range ids[i+1:] {
			d1, ok1 := r.Distance(a, c)
			d2, ok2 := got.Distance(a, c)
			if d1 != d2 || ok1 != ok2 {
				t.Errorf("distance %s–%s: %v %v decoded, %v %v before", a, c, d2, ok2, d1, ok1)
			}
		}
	}
	if b2, _ := got.MarshalBinary(); !bytes.Equal(b, b2) {
		t.Errorf("decoded accumulator encodes to other bytes:\n%x\n%x", b2, b)
	}
	// Version, 4 ids (c1, c2, c3, zero: a length byte and the id), 4 pairs
	// (c1–c2, c1–c3, c2–c3, c2–zero) of 18 bytes.
	if want := 1 + 1 + 3*(1+2) + (1 + 4) + 1 + 4*18; len(b) != want {
		t.Errorf("%d bytes, want %d", len(b), want)
	}
	next := [][]float64{{1, 2}, {2, 1}, {0, 0.5}}
	clone := r.Clone()
	if err := r.Add([]string{"c1", "c2", "c3"}, next); err != nil {
		t.Fatal(err)
	}
	if err := got.Add([]string{"c1", "c2", "c3"}, next); err != nil {
		t.Fatal(err)
	}
	b1, _ := r.MarshalBinary()
	b2, _ := got.MarshalBinary()
	if !bytes.Equal(b1, b2) {
		t.Error("after one more round the decoded accumulator differs from the original")
	}
	if cb, _ := clone.MarshalBinary(); !bytes.Equal(cb, b) {
		t.Error("a round added to the original changed its clone")
	}

	// The same rounds' pairs, clients listed in another order.
	o := NewRedundancy()
	for _, rd := range []struct {
		ids     []string
		updates [][]float64
	}{
		{[]string{"c2", "c1", "c3"}, [][]float64{{0, 1}, {1, 0}, {1, 0.5}}},
		{[]string{"c3", "c1"}, [][]float64{{0.5, 0.25}, {0.5, 0.5}}},
		{[]string{"zero", "c2"}, [][]float64{{0, 0}, {1, 1}}},
	} {
		if err := o.Add(rd.ids, rd.updates); err != nil {
			t.Fatal(err)
		}
	}
	if ob, _ := o.MarshalBinary(); !bytes.Equal(ob, b) {
		t.Errorf("the same sums added in another order encode to other bytes:\n%x\n%x", ob, b)
	}

	var empty Redundancy
	eb, _ := NewRedundancy().MarshalBinary()
	if err := empty.UnmarshalBinary(eb); err != nil {
		t.Fatalf("empty accumulator %x: %v", eb, err)
	}
	if c := empty.Replicas([]string{"a", "b"}); len(c) != 2 {
		t.Errorf("decoded empty accumulator clusters %v, want two singletons", c)
	}
}

// TestRedundancyBinaryMalformed: every kind of damage is refused with
// ErrRedundancyEncoding, naming what is wrong, and leaves the accumulator
// as it was.
func TestRedundancyBinaryMalformed(t *testing.T) {
	r := NewRedundancy()
	if err := r.Add([]string{"a", "b"}, [][]float64{{1, 0}, {0, 1}}); err != nil {
		t.Fatal(err)
	}
	good, _ := r.MarshalBinary() // 01 02 01 'a' 01 'b' 01 00 01 <dist2> <norm2>
	f64 := func(x float64) []byte { return binary.LittleEndian.AppendUint64(nil, math.Float64bits(x)) }
	pair := func(i, j byte, d, n float64) []byte {
		return append(append([]byte{i, j}, f64(d)...), f64(n)...)
	}
	head := []byte{1, 2, 1, 'a', 1, 'b'}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	if want := cat(head, []byte{1}, pair(0, 1, 2, 1)); !bytes.Equal(good, want) {
		t.Fatalf("encoding %x, the test expects %x", good, want)
	}
	cases := []struct {
		name, want string
		b          []byte
	}{
		{"empty", "no bytes", nil},
		{"version", "version 2", cat([]byte{2}, good[1:])},
		{"truncated count", "number of clients", []byte{1}},
		{"too many clients", "clients in", []byte{1, 100, 1, 'a'}},
		{"id overruns", "id of 9 bytes", []byte{1, 2, 1, 'a', 9, 'b', 0, 0}},
		{"ids out of order", `"a" after "b"`, cat([]byte{1, 2, 1, 'b', 1, 'a', 1}, pair(0, 1, 2, 1))},
		{"repeated id", `"a" after "a"`, cat([]byte{1, 2, 1, 'a', 1, 'a', 1}, pair(0, 1, 2, 1))},
		{"too many pairs", "pairs in", cat(head, []byte{2}, pair(0, 1, 2, 1))},
		{"index out of range", "names client 2 of 2", cat(head, []byte{1}, pair(0, 2, 2, 1))},
		{"pair not i<j", "want i < j", cat(head, []byte{1}, pair(1, 0, 2, 1))},
		{"pair repeated", "pairs must be increasing", cat([]byte{1, 2, 1, 'a', 1, 'b', 2}, pair(0, 1, 2, 1), pair(0, 1, 2, 1))},
		// Index 1 as a two-byte varint leaves 7 bytes of the 18 for the sums.
		{"sum truncated", "norm sum truncated", cat(head, []byte{1, 0, 0x81, 0}, f64(2), f64(1)[:7])},
		{"negative sum", "distance sum is -1", cat(head, []byte{1}, pair(0, 1, -1, 1))},
		{"NaN sum", "norm sum is NaN", cat(head, []byte{1}, pair(0, 1, 2, math.NaN()))},
		{"infinite sum", "norm sum is +Inf", cat(head, []byte{1}, pair(0, 1, 2, math.Inf(1)))},
		{"trailing bytes", "1 bytes after the last pair", cat(good, []byte{0})},
		{"unused id", `"c" is in no pair`, cat([]byte{1, 3, 1, 'a', 1, 'b', 1, 'c', 1}, pair(0, 1, 2, 1))},
		{"long varint", "canonical", cat([]byte{1, 0x82, 0x00, 1, 'a', 1, 'b', 1}, pair(0, 1, 2, 1))},
		{"minus zero", "distance sum is -0", cat(head, []byte{1}, pair(0, 1, math.Copysign(0, -1), 1))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := accumulated(t)
			before, _ := got.MarshalBinary()
			err := got.UnmarshalBinary(c.b)
			if !errors.Is(err, ErrRedundancyEncoding) {
				t.Fatalf("%x: error %v, want ErrRedundancyEncoding", c.b, err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("%x: error %q does not say %q", c.b, err, c.want)
			}
			if after, _ := got.MarshalBinary(); !bytes.Equal(after, before) {
				t.Error("a refused encoding changed the accumulator")
			}
		})
	}
}
