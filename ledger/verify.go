package ledger

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// ErrVerify is wrapped by every verification failure; the error is a
// *VerifyError naming the first bad record.
var ErrVerify = errors.New("ledger: verification failed")

// Problem says what is wrong with a record.
type Problem string

// The problems verification reports.
const (
	ProblemEncoding  Problem = "undecodable or non-canonical record"
	ProblemSeq       Problem = "seq gap"
	ProblemHash      Problem = "hash mismatch"
	ProblemSignature Problem = "bad signature"
	ProblemChain     Problem = "broken chain"
	ProblemClient    Problem = "receipt of another client"
	ProblemDigest    Problem = "submission digest mismatch"
	ProblemIndex     Problem = "index inconsistent with receipts"
	ProblemMissing   Problem = "receipt not in the ledger"
)

// VerifyError names the first bad record found. Fields that are unknown
// (the record could not be decoded, or it does not come from a file) are
// zero.
type VerifyError struct {
	// Index is the record's position in the slice or bucket verified.
	Index int
	// Line is the 1-based line in a receipts file, 0 otherwise.
	Line   int
	Seq    uint64
	Round  int
	Client string
	Problem
	// Detail adds what was expected, when useful.
	Detail string
}

func (e *VerifyError) Error() string {
	var b strings.Builder
	b.WriteString(ErrVerify.Error())
	b.WriteString(": ")
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	fmt.Fprintf(&b, "receipt seq %d (round %d, client %q): %s", e.Seq, e.Round, e.Client, e.Problem)
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	return b.String()
}

// Unwrap makes errors.Is(err, ErrVerify) true.
func (e *VerifyError) Unwrap() error { return ErrVerify }

func badRecord(i int, r *Receipt, p Problem, format string, args ...any) *VerifyError {
	return &VerifyError{Index: i, Seq: r.Seq, Round: r.Round, Client: r.Client, Problem: p, Detail: fmt.Sprintf(format, args...)}
}

func checkPublicKey(pub ed25519.PublicKey) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: %d bytes, want %d", ErrPublicKey, len(pub), ed25519.PublicKeySize)
	}
	return nil
}

// verifyRecord checks that r's hash covers its fields and that pub signed
// it.
func verifyRecord(i int, r *Receipt, pub ed25519.PublicKey) *VerifyError {
	if h := r.ComputeHash(); r.Hash != h {
		return badRecord(i, r, ProblemHash, "stored %q, fields hash to %q", r.Hash, h)
	}
	h, _ := hex.DecodeString(r.Hash) // equal to a hex string we made
	// Strict decoding: the lenient decoder ignores the unused low bits of
	// the last character, so a flipped bit there would go unnoticed.
	sig, err := base64.StdEncoding.Strict().DecodeString(r.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return badRecord(i, r, ProblemSignature, "not a base64 Ed25519 signature")
	}
	if !ed25519.Verify(pub, h, sig) {
		return badRecord(i, r, ProblemSignature, "does not verify under the public key")
	}
	return nil
}

// chain verifies a ledger record by record, so that the first bad one is
// reported whatever is wrong with it.
type chain struct {
	pub      ed25519.PublicKey
	prevSeq  uint64
	prevHash string
}

func (c *chain) next(i int, r *Receipt) *VerifyError {
	if r.Seq != c.prevSeq+1 {
		return badRecord(i, r, ProblemSeq, "want seq %d", c.prevSeq+1)
	}
	if e := verifyRecord(i, r, c.pub); e != nil {
		return e
	}
	if r.PrevHash != c.prevHash {
		return badRecord(i, r, ProblemChain, "prev_hash %q, previous receipt's hash %q", r.PrevHash, c.prevHash)
	}
	c.prevSeq, c.prevHash = r.Seq, r.Hash
	return nil
}

// stored checks one raw record of the receipts bucket, stored under key k,
// and then feeds it to the chain.
func (c *chain) stored(i int, k, v []byte) (Receipt, *VerifyError) {
	var seq uint64
	if len(k) == 8 {
		seq = binary.BigEndian.Uint64(k)
	}
	r, err := decodeStrict(v)
	if err != nil {
		return r, &VerifyError{Index: i, Seq: seq, Problem: ProblemEncoding, Detail: err.Error()}
	}
	// Re-encoding must give the stored bytes back: otherwise a change the
	// decoder forgives (a field name in another case, say) would pass.
	if canon, _ := json.Marshal(r); !bytes.Equal(canon, v) {
		return r, badRecord(i, &r, ProblemEncoding, "stored bytes are not the record's encoding")
	}
	if len(k) != 8 || r.Seq != seq {
		e := badRecord(i, &r, ProblemSeq, "record says seq %d, stored under key %x", r.Seq, k)
		e.Seq = seq // name the record by where it is stored
		return r, e
	}
	if !roundInRange(r.Round) {
		return r, badRecord(i, &r, ProblemEncoding, "round out of range")
	}
	return r, c.next(i, &r)
}

// VerifyChain checks a whole ledger in Seq order: Seq runs 1, 2, 3, ...
// without gaps; each Hash covers its record; pub signed each Hash; each
// PrevHash is the previous record's Hash ("" for the first). It returns a
// *VerifyError for the first record that fails. An empty ledger verifies.
//
// A chain cannot show that records were cut from its end; receipts held by
// clients can (see DB.VerifyIncluded).
func VerifyChain(rs []Receipt, pub ed25519.PublicKey) error {
	if err := checkPublicKey(pub); err != nil {
		return err
	}
	c := chain{pub: pub}
	for i := range rs {
		if e := c.next(i, &rs[i]); e != nil {
			return e
		}
	}
	return nil
}

// VerifyClientReceipts checks a client's own receipts, which are a subset
// of the global chain: each Hash covers its record and pub signed it; each
// names client; where digests has an entry for the receipt's round, the
// receipt's SubmissionDigest equals it; and Seq strictly increases. It
// returns a *VerifyError for the first record that fails.
func VerifyClientReceipts(rs []Receipt, pub ed25519.PublicKey, client string, digests map[int]string) error {
	if err := checkPublicKey(pub); err != nil {
		return err
	}
	if client == "" {
		return fmt.Errorf("%w: empty client id", ErrInvalidReceipt)
	}
	var prev uint64
	for i := range rs {
		r := &rs[i]
		if e := verifyRecord(i, r, pub); e != nil {
			return e
		}
		if r.Client != client {
			return badRecord(i, r, ProblemClient, "want client %q", client)
		}
		if d, ok := digests[r.Round]; ok && r.Kind == "" && r.SubmissionDigest != d {
			return badRecord(i, r, ProblemDigest, "receipt has %q, own submission %q", r.SubmissionDigest, d)
		}
		if r.Seq <= prev {
			return badRecord(i, r, ProblemSeq, "seq does not increase after %d", prev)
		}
		prev = r.Seq
	}
	return nil
}

// Verify checks the whole stored ledger against the public key stored in
// the same file. That detects any change made without the key (a flipped
// byte, an edited value, a removed or reordered record); someone who
// replaced the key could re-sign everything, so an auditor should use
// VerifyWithKey with the public key the coordinator published.
func (db *DB) Verify() error {
	pub, err := db.PublicKey()
	if err != nil {
		return err
	}
	return db.VerifyWithKey(pub)
}

// VerifyWithKey checks the whole stored ledger against pub: each stored
// value decodes strictly and is byte for byte the encoding of the record
// it holds, is stored under its own Seq, and the records form a chain that
// VerifyChain accepts; finally the (job, round, client) index matches the
// receipts. It returns a *VerifyError for the first bad record.
func (db *DB) VerifyWithKey(pub ed25519.PublicKey) error {
	if err := checkPublicKey(pub); err != nil {
		return err
	}
	return db.bolt.View(func(tx *bolt.Tx) error {
		c := chain{pub: pub}
		want := make(map[string]uint64)
		i := 0
		err := receiptsBucket(tx).ForEach(func(k, v []byte) error {
			defer func() { i++ }()
			r, e := c.stored(i, k, v)
			if e != nil {
				return e
			}
			want[string(indexKey(r.Job, r.Round, r.Client, r.Kind))] = r.Seq
			return nil
		})
		if err != nil {
			return err
		}
		n := 0
		err = tx.Bucket([]byte(bucketReceiptIdx)).ForEach(func(k, v []byte) error {
			n++
			s, ok := want[string(k)]
			if !ok || len(v) != 8 || binary.BigEndian.Uint64(v) != s {
				e := &VerifyError{Index: n - 1, Problem: ProblemIndex, Detail: fmt.Sprintf("index entry %q has no matching receipt", k)}
				if parts := strings.SplitN(string(k), "\x00", 3); len(parts) == 3 {
					e.Round, _ = ParseRoundKey(parts[1])
					e.Client = parts[2]
				}
				return e
			}
			return nil
		})
		if err != nil {
			return err
		}
		if n != len(want) {
			return &VerifyError{Index: -1, Problem: ProblemIndex, Detail: fmt.Sprintf("%d index entries for %d receipts", n, len(want))}
		}
		return nil
	})
}

// VerifyIncluded checks that every receipt of rs (typically a client's
// file, already checked by VerifyClientReceipts) is stored in the ledger
// at its Seq with the same Hash. A ledger cut short, or rewritten by its
// key holder, fails here for the clients whose receipts it lost or changed.
func (db *DB) VerifyIncluded(rs []Receipt) error {
	return db.bolt.View(func(tx *bolt.Tx) error {
		b := receiptsBucket(tx)
		for i := range rs {
			r := &rs[i]
			v := b.Get(seqKey(r.Seq))
			if v == nil {
				return badRecord(i, r, ProblemMissing, "no receipt with this seq")
			}
			var s Receipt
			if err := json.Unmarshal(v, &s); err != nil || s.Hash != r.Hash {
				return badRecord(i, r, ProblemMissing, "the ledger holds a different receipt at this seq")
			}
		}
		return nil
	})
}

// decodeStrict decodes one JSON receipt, refusing unknown fields and
// trailing data: a field the hash does not cover must not ride along.
func decodeStrict(b []byte) (Receipt, error) {
	var r Receipt
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&r); err != nil {
		return Receipt{}, err
	}
	if err := d.Decode(new(json.RawMessage)); err != io.EOF {
		return Receipt{}, errors.New("trailing data after the receipt")
	}
	return r, nil
}
