package aggregation

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"github.com/tuneinsight/lattigo/v6/ring"
)

// Wire format. Every polynomial-carrying message starts with a fixed
// header, followed by kind-specific fields, followed by raw coefficients:
// for each polynomial, for each modulus row, N little-endian uint64 words,
// each strictly below its modulus. A ciphertext's c₀ may carry fewer rows
// than its c₁ (encrypt.go) and a decryption share fewer than the
// ciphertext (member.go); each kind's version says which layout it has. Lattigo's own encoding trusts the sizes
// in its headers and allocates from them; parsing our own fixed-size form
// lets every check happen before a single lattigo call, so no input can
// panic or exhaust memory.
//
//	offset size field
//	0      2    magic "TA"
//	2      1    kind
//	3      1    version (1; 2 for ciphertexts and decryption shares)
//	4      1    logN
//	5      1    levelQ (number of Q rows − 1)
//	6      1    number of P rows
//	7      1    number of polynomials
//	8      8    parameters ID
//	16     32   key-generation instance ID
//	48          kind-specific fields, then coefficients
const (
	wireVersion    = 1
	baseHeaderSize = 48
)

type msgKind byte

const (
	kindCiphertext   msgKind = 1
	kindPKShare      msgKind = 2
	kindPublicKey    msgKind = 3
	kindShamirShare  msgKind = 4
	kindDecryptShare msgKind = 5
	// kindInfluence is an influence ciphertext (influence.go): a kind of
	// its own, so that DecryptShare, which parses only kindCiphertext, can
	// never be handed one to decrypt whole.
	kindInfluence        msgKind = 6
	kindCoefficientShare msgKind = 7
)

func (k msgKind) String() string {
	switch k {
	case kindCiphertext:
		return "ciphertext"
	case kindPKShare:
		return "public-key share"
	case kindPublicKey:
		return "public key"
	case kindShamirShare:
		return "threshold share"
	case kindDecryptShare:
		return "decryption share"
	case kindInfluence:
		return "influence ciphertext"
	case kindCoefficientShare:
		return "coefficient share"
	}
	return fmt.Sprintf("kind %d", byte(k))
}

// layout describes the expected shape of one message kind.
type layout struct {
	kind    msgKind
	version byte // 0: wireVersion
	levelQ  int  // highest Q level carried
	rowsP   int  // number of P rows carried per polynomial
	polys   int
	extra   int // size of the kind-specific fields after the base header
	coeffs  int // coefficients per row; 0 means the ring degree N
	// dropFirst is how many of its top Q rows the first polynomial
	// leaves out (a rounded c₀, encrypt.go).
	dropFirst int
}

func (l layout) wireVersion() byte {
	if l.version == 0 {
		return wireVersion
	}
	return l.version
}

func (l layout) rows() int { return l.levelQ + 1 + l.rowsP }

func (l layout) size(n int) int {
	if l.coeffs > 0 {
		n = l.coeffs
	}
	return baseHeaderSize + l.extra + (l.polys*l.rows()-l.dropFirst)*n*8
}

// header is the decoded fixed header.
type header struct {
	params [8]byte
	key    [32]byte
}

// putHeader writes the base header into b (len ≥ baseHeaderSize).
func putHeader(b []byte, p Parameters, l layout, key [32]byte) {
	b[0], b[1] = 'T', 'A'
	b[2] = byte(l.kind)
	b[3] = l.wireVersion()
	b[4] = byte(p.cfg.LogN)
	b[5] = byte(l.levelQ)
	b[6] = byte(l.rowsP)
	b[7] = byte(l.polys)
	id := p.ID()
	copy(b[8:16], id[:])
	copy(b[16:48], key[:])
}

// checkHeader validates the base header and total length of b against the
// expected layout; it returns the decoded header.
func checkHeader(b []byte, p Parameters, l layout) (header, error) {
	var h header
	if len(b) < baseHeaderSize {
		return h, fmt.Errorf("%w: %v: %d bytes, shorter than the header", ErrMalformed, l.kind, len(b))
	}
	if b[0] != 'T' || b[1] != 'A' {
		return h, fmt.Errorf("%w: %v: bad magic", ErrMalformed, l.kind)
	}
	if msgKind(b[2]) != l.kind {
		return h, fmt.Errorf("%w: expected %v, got %v", ErrMalformed, l.kind, msgKind(b[2]))
	}
	if v := l.wireVersion(); b[3] != v {
		return h, fmt.Errorf("%w: %w: %v: version %d, want %d (a job's messages are written and read by one wire format)", ErrMalformed, ErrWireVersion, l.kind, b[3], v)
	}
	copy(h.params[:], b[8:16])
	copy(h.key[:], b[16:48])
	if h.params != p.ID() || int(b[4]) != p.cfg.LogN {
		return h, fmt.Errorf("%w: %v: made with parameters %x (logN %d), expected %x (logN %d)",
			ErrParametersMismatch, l.kind, h.params, b[4], p.ID(), p.cfg.LogN)
	}
	if int(b[5]) != l.levelQ || int(b[6]) != l.rowsP || int(b[7]) != l.polys {
		return h, fmt.Errorf("%w: %v: level %d, %d P rows, degree %d; expected level %d, %d P rows, degree %d",
			ErrMalformed, l.kind, b[5], b[6], int(b[7])-1, l.levelQ, l.rowsP, l.polys-1)
	}
	if want := l.size(p.ckks.N()); len(b) != want {
		return h, fmt.Errorf("%w: %v: %d bytes, expected %d", ErrMalformed, l.kind, len(b), want)
	}
	return h, nil
}

// moduliRows returns the moduli of the rows of one polynomial of layout l:
// Q rows 0..levelQ, then the first rowsP P moduli.
func (p Parameters) moduliRows(l layout) []uint64 {
	q := p.ckks.Q()[:l.levelQ+1]
	out := append([]uint64(nil), q...)
	return append(out, p.ckks.P()[:l.rowsP]...)
}

// checkCoeffs verifies that every coefficient word in data (the payload
// after all headers) is reduced modulo its row's modulus.
func checkCoeffs(data []byte, moduli []uint64, n, polys int, kind msgKind) error {
	off := 0
	for k := 0; k < polys; k++ {
		for r, q := range moduli {
			row := data[off : off+8*n]
			for i := 0; i < n; i++ {
				if binary.LittleEndian.Uint64(row[8*i:]) >= q {
					return fmt.Errorf("%w: %v: polynomial %d row %d coefficient %d not reduced", ErrMalformed, kind, k, r, i)
				}
			}
			off += 8 * n
		}
	}
	return nil
}

// littleEndian is true on hosts whose native byte order is the wire's,
// where rows are copied as raw memory instead of word by word: marshalling
// is on the client's hot path (62 ciphertexts of 512 KiB per 1M
// parameters) and the copy is several times faster than the loop.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// putRows writes the rows of a polynomial (already reduced).
func putRows(dst []byte, rows [][]uint64) int {
	off := 0
	for _, row := range rows {
		if littleEndian && len(row) > 0 {
			off += copy(dst[off:off+8*len(row)], unsafe.Slice((*byte)(unsafe.Pointer(&row[0])), 8*len(row)))
			continue
		}
		for _, c := range row {
			binary.LittleEndian.PutUint64(dst[off:], c)
			off += 8
		}
	}
	return off
}

// readRows fills rows from src; the caller has checked the size and the
// reduction of every word.
func readRows(src []byte, rows [][]uint64) int {
	off := 0
	for _, row := range rows {
		for i := range row {
			row[i] = binary.LittleEndian.Uint64(src[off:])
			off += 8
		}
	}
	return off
}

// polyRows lists the rows of a lattigo polynomial pair (Q then P).
func polyRows(q ring.Poly, p *ring.Poly) [][]uint64 {
	rows := append([][]uint64(nil), q.Coeffs...)
	if p != nil {
		rows = append(rows, p.Coeffs...)
	}
	return rows
}

// addRowsMod adds the coefficient words in src into rows modulo moduli;
// src has been validated by checkCoeffs.
func addRowsMod(rows [][]uint64, moduli []uint64, src []byte) {
	off := 0
	for r, row := range rows {
		q := moduli[r]
		for i := range row {
			s := row[i] + binary.LittleEndian.Uint64(src[off:])
			if s >= q {
				s -= q
			}
			row[i] = s
			off += 8
		}
	}
}
