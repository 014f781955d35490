package ledger

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func digestOf(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func clientID(i int) string { return fmt.Sprintf("c%d", i) }

// testReceipts returns the unsigned receipts of one round with n clients,
// each with its own value and digest.
func testReceipts(job string, round, n int) []Receipt {
	rs := make([]Receipt, n)
	for i := range rs {
		rs[i] = Receipt{
			Job: job, Round: round, Client: clientID(i),
			SubmissionDigest: digestOf(fmt.Sprintf("%s/%d/%d", job, round, i)),
			Decrypted: []Decryption{
				{Purpose: "total", Contributors: n, Digest: digestOf(fmt.Sprintf("total/%d", round))},
				{Purpose: "influence", Contributors: 1},
			},
			Method: "shapley", Mode: "influence",
			Value: 0.25 + 0.125*float64(i) + float64(round), StdErr: 0.01,
			Payout: 10 * float64(i+1), Quota: 1.5,
		}
	}
	return rs
}

// appendRounds appends rounds 1..rounds of n clients each, one transaction
// per round, and returns everything stored.
func appendRounds(t testing.TB, db *DB, job string, rounds, n int) []Receipt {
	t.Helper()
	key, err := db.SigningKey()
	if err != nil {
		t.Fatal(err)
	}
	var all []Receipt
	for r := 1; r <= rounds; r++ {
		err := db.Update(func(tx *Tx) error {
			got, err := tx.AppendReceipts(key, testReceipts(job, r, n))
			all = append(all, got...)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return all
}

func rawRecord(t *testing.T, db *DB, seq uint64) []byte {
	t.Helper()
	var v []byte
	_ = db.bolt.View(func(tx *bolt.Tx) error {
		v = bytes.Clone(tx.Bucket([]byte(bucketReceipts)).Get(seqKey(seq)))
		return nil
	})
	if v == nil {
		t.Fatalf("no receipt %d", seq)
	}
	return v
}

// setRaw is the test hook that edits the file behind the ledger's back.
func setRaw(t *testing.T, db *DB, bucket string, key, v []byte) {
	t.Helper()
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		if v == nil {
			return tx.Bucket([]byte(bucket)).Delete(key)
		}
		return tx.Bucket([]byte(bucket)).Put(key, v)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestAppendChainsAcrossTransactionsAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "coord.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	first := appendRounds(t, db, "job", 2, 3)
	_ = db.Close()

	db = openAt(t, path)
	key, _ := db.SigningKey()
	var third []Receipt
	err = db.Update(func(tx *Tx) error {
		third, err = tx.AppendReceipts(key, testReceipts("job", 3, 3))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	want := append(first, third...)
	got, err := db.Receipts(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 9 {
		t.Fatalf("%d receipts, want 9", len(got))
	}
	for i, r := range got {
		if r.Seq != uint64(i+1) {
			t.Errorf("receipt %d has seq %d", i, r.Seq)
		}
		if i == 0 && r.PrevHash != "" || i > 0 && r.PrevHash != got[i-1].Hash {
			t.Errorf("seq %d: prev_hash %q does not chain", r.Seq, r.PrevHash)
		}
		if r.Hash != want[i].Hash || r.Signature != want[i].Signature {
			t.Errorf("seq %d: stored receipt differs from the one returned by AppendReceipts", r.Seq)
		}
	}
	pub, _ := db.PublicKey()
	if err := VerifyChain(got, pub); err != nil {
		t.Errorf("VerifyChain = %v", err)
	}
	if err := db.Verify(); err != nil {
		t.Errorf("Verify = %v", err)
	}
}

func TestAppendIgnoresCallerChainFields(t *testing.T) {
	db := openTest(t)
	key, _ := db.SigningKey()
	rs := testReceipts("job", 1, 1)
	rs[0].Seq, rs[0].PrevHash, rs[0].Hash, rs[0].Signature = 42, "x", "y", "z"
	var got []Receipt
	err := db.Update(func(tx *Tx) (err error) { got, err = tx.AppendReceipts(key, rs); return err })
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Seq != 1 || got[0].PrevHash != "" || got[0].Hash != got[0].ComputeHash() {
		t.Errorf("AppendReceipts kept caller values: %+v", got[0])
	}
	if err := db.Verify(); err != nil {
		t.Error(err)
	}
}

func TestAppendRefusesInvalid(t *testing.T) {
	mutations := map[string]func(r *Receipt){
		"empty_job":        func(r *Receipt) { r.Job = "" },
		"nul_in_client":    func(r *Receipt) { r.Client = "a\x00b" },
		"empty_client":     func(r *Receipt) { r.Client = "" },
		"negative_round":   func(r *Receipt) { r.Round = -1 },
		"short_digest":     func(r *Receipt) { r.SubmissionDigest = "abcd" },
		"upper_hex_digest": func(r *Receipt) { r.SubmissionDigest = strings.ToUpper(r.SubmissionDigest) },
		"nan_value":        func(r *Receipt) { r.Value = math.NaN() },
		"inf_payout":       func(r *Receipt) { r.Payout = math.Inf(1) },
		"no_purpose":       func(r *Receipt) { r.Decrypted[0].Purpose = "" },
		"neg_contributors": func(r *Receipt) { r.Decrypted[0].Contributors = -1 },
		"bad_dec_digest":   func(r *Receipt) { r.Decrypted[0].Digest = "zz" },
		"dp_no_delta":      func(r *Receipt) { r.DPEpsilon = 2 },
		"dp_neg_epsilon":   func(r *Receipt) { r.DPEpsilon, r.DPDelta = -1, 1e-5 },
		"dp_inf_epsilon":   func(r *Receipt) { r.DPEpsilon, r.DPDelta = math.Inf(1), 1e-5 },
	}
	for name, mutate := range mutations {
		t.Run(name, func(t *testing.T) {
			db := openTest(t)
			key, _ := db.SigningKey()
			rs := testReceipts("job", 1, 3)
			mutate(&rs[2])
			err := db.Update(func(tx *Tx) error { _, err := tx.AppendReceipts(key, rs); return err })
			if !errors.Is(err, ErrInvalidReceipt) {
				t.Fatalf("AppendReceipts = %v, want ErrInvalidReceipt", err)
			}
			if got, _ := db.Receipts(Filter{}); len(got) != 0 {
				t.Errorf("%d receipts stored from a refused batch", len(got))
			}
		})
	}
}

func TestAppendRefusesDuplicates(t *testing.T) {
	db := openTest(t)
	key, _ := db.SigningKey()
	appendRounds(t, db, "job", 1, 3)
	cases := map[string][]Receipt{
		"already_stored": testReceipts("job", 1, 1),
		"twice_in_batch": append(testReceipts("job", 2, 2), testReceipts("job", 2, 1)...),
	}
	for name, rs := range cases {
		t.Run(name, func(t *testing.T) {
			err := db.Update(func(tx *Tx) error { _, err := tx.AppendReceipts(key, rs); return err })
			if !errors.Is(err, ErrDuplicateReceipt) {
				t.Errorf("AppendReceipts = %v, want ErrDuplicateReceipt", err)
			}
		})
	}
	// The same round and client in another job is a different receipt.
	err := db.Update(func(tx *Tx) error { _, err := tx.AppendReceipts(key, testReceipts("job2", 1, 3)); return err })
	if err != nil {
		t.Errorf("other job: %v", err)
	}
}

func TestQueries(t *testing.T) {
	db := openTest(t)
	appendRounds(t, db, "a", 3, 3)
	appendRounds(t, db, "b", 1, 2)
	for _, c := range []struct {
		name string
		f    Filter
		want int
	}{
		{"all", Filter{}, 11},
		{"job=a", Filter{Job: "a"}, 9},
		{"client=c1", Filter{Client: "c1"}, 4},
		{"job=a/client=c2", Filter{Job: "a", Client: "c2"}, 3},
		{"job=b/client=c1", Filter{Job: "b", Client: "c1"}, 1},
		// The index answers job and client together: a prefix of a
		// client's id, or a client of another job only, selects nothing.
		{"job=a/client=c", Filter{Job: "a", Client: "c"}, 0},
		{"job=b/client=c2", Filter{Job: "b", Client: "c2"}, 0},
		{"job=a/client=c1/round=2", Filter{Job: "a", Client: "c1", ByRound: true, Round: 2}, 1},
		{"round=1", Filter{ByRound: true, Round: 1}, 5},
		{"job=b/round=2", Filter{Job: "b", ByRound: true, Round: 2}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			rs, err := db.Receipts(c.f)
			if err != nil || len(rs) != c.want {
				t.Fatalf("Receipts = %d, %v; want %d", len(rs), err, c.want)
			}
			for i, r := range rs {
				if !c.f.match(&r) || i > 0 && r.Seq <= rs[i-1].Seq {
					t.Errorf("receipt seq %d does not match or is out of order", r.Seq)
				}
			}
		})
	}
	rs, _ := db.ReceiptsForClient("c0")
	if len(rs) != 4 {
		t.Errorf("ReceiptsForClient = %d, want 4", len(rs))
	}
	for _, c := range []struct {
		job   string
		round int
		want  bool
	}{{"a", 1, true}, {"a", 3, true}, {"a", 4, false}, {"a", 0, false}, {"b", 1, true}, {"b", 2, false}, {"", 1, false}} {
		if got, err := db.HasReceiptsForRound(c.job, c.round); got != c.want || err != nil {
			t.Errorf("HasReceiptsForRound(%q, %d) = %v, %v", c.job, c.round, got, err)
		}
	}
}

// The encoding that hashes cover is pinned: changing it silently would
// make every receipt already held by a client fail to verify. The value
// was cross-checked with an independent Python implementation of the
// encoding documented on Canonical.
func TestCanonicalHashPinned(t *testing.T) {
	r := testReceipts("job", 7, 2)[1]
	r.Seq, r.PrevHash = 12, digestOf("previous")
	const want = "b5f486420542808f40bf02422eb5e7d89ebd49d3b9e54aa6cf6d7ea9b79a7a14"
	if got := r.ComputeHash(); got != want {
		t.Errorf("hash = %s, want %s", got, want)
	}
}

// TestCanonicalDPFieldsDistinct: a receipt's DP fields hash apart from
// the same bytes read as settlement fields, and the pinned hash above
// (no DP fields) is the one receipts had before they existed.
func TestCanonicalDPFieldsDistinct(t *testing.T) {
	base := testReceipts("job", 2, 3)[1]
	base.Seq, base.PrevHash = 5, digestOf("p")
	withDP := base
	withDP.DPEpsilon, withDP.DPDelta = 3.25, 1e-5
	if len(withDP.Canonical()) != len(base.Canonical())+4+8+8+16 {
		t.Errorf("DP receipt encodes in %d bytes, want the %d of the plain one plus the settlement block and two floats", len(withDP.Canonical()), len(base.Canonical()))
	}
	if withDP.ComputeHash() == base.ComputeHash() {
		t.Error("DP fields leave the hash unchanged")
	}
}

// TestCanonicalGradientDistinct: an influence decryption's multiplier
// vector digest is hashed (after the settlement and DP blocks, then always
// written), which decryption it belongs to counts, and receipts without
// one hash as before (the pinned hash above).
func TestCanonicalGradientDistinct(t *testing.T) {
	base := testReceipts("job", 2, 3)[1]
	base.Seq, base.PrevHash = 5, digestOf("p")
	if len(base.Decrypted) < 2 {
		t.Fatalf("fixture has %d decryptions, want 2", len(base.Decrypted))
	}
	g := digestOf("gradient")
	first, second := base, base
	first.Decrypted = append([]Decryption(nil), base.Decrypted...)
	second.Decrypted = append([]Decryption(nil), base.Decrypted...)
	first.Decrypted[0].Gradient, second.Decrypted[1].Gradient = g, g
	if first.ComputeHash() == second.ComputeHash() {
		t.Error("the same gradient digest on two different decryptions hashes alike")
	}
	extra := 4 + 8 + 8 + 16 + (4 + len(g)) + 4*(len(base.Decrypted)-1)
	if n := len(first.Canonical()); n != len(base.Canonical())+extra {
		t.Errorf("receipt with a gradient encodes in %d bytes, want %d", n, len(base.Canonical())+extra)
	}
}

func TestCanonicalCoversEveryField(t *testing.T) {
	base := testReceipts("job", 2, 3)[1]
	base.Seq, base.PrevHash = 5, digestOf("p")
	mutations := map[string]func(r *Receipt){
		"seq":                   func(r *Receipt) { r.Seq++ },
		"job":                   func(r *Receipt) { r.Job += "x" },
		"round":                 func(r *Receipt) { r.Round++ },
		"client":                func(r *Receipt) { r.Client = "c9" },
		"submission_digest":     func(r *Receipt) { r.SubmissionDigest = digestOf("other") },
		"decrypted_purpose":     func(r *Receipt) { r.Decrypted[0].Purpose = "group" },
		"decrypted_contributor": func(r *Receipt) { r.Decrypted[1].Contributors = 2 },
		"decrypted_digest":      func(r *Receipt) { r.Decrypted[1].Digest = digestOf("d") },
		"decrypted_dropped":     func(r *Receipt) { r.Decrypted = r.Decrypted[:1] },
		"method":                func(r *Receipt) { r.Method = "tmc" },
		"mode":                  func(r *Receipt) { r.Mode = "groups" },
		"value":                 func(r *Receipt) { r.Value = math.Nextafter(r.Value, 1e9) },
		"stderr":                func(r *Receipt) { r.StdErr = 0.02 },
		"payout":                func(r *Receipt) { r.Payout = 0 },
		"quota":                 func(r *Receipt) { r.Quota = -r.Quota },
		"prev_hash":             func(r *Receipt) { r.PrevHash = "" },
		"dp_epsilon":            func(r *Receipt) { r.DPEpsilon, r.DPDelta = 1.5, 1e-5 },
		"dp_delta":              func(r *Receipt) { r.DPDelta = 1e-6 },
		"decrypted_gradient":    func(r *Receipt) { r.Decrypted[1].Gradient = digestOf("g") },
		// Length prefixes keep the boundary between fields in the hash.
		"boundary": func(r *Receipt) { r.Job, r.Round, r.Client = "jobc", 2, "1" },
	}
	h := base.ComputeHash()
	for name, mutate := range mutations {
		t.Run(name, func(t *testing.T) {
			r := base
			r.Decrypted = append([]Decryption(nil), base.Decrypted...)
			mutate(&r)
			if r.ComputeHash() == h {
				t.Errorf("changing %s leaves the hash unchanged", name)
			}
		})
	}
	zero := base
	zero.Value = math.Copysign(0, -1)
	plus := base
	plus.Value = 0
	if zero.ComputeHash() == plus.ComputeHash() {
		t.Error("−0 and +0 hash alike: the encoding is not the float's bits")
	}
}

// Floats travel through JSON to a client's file and back with their exact
// bits, so hashes still verify there.
func TestReceiptLinesRoundTripExactFloats(t *testing.T) {
	db := openTest(t)
	key, _ := db.SigningKey()
	rs := testReceipts("job", 1, 6)
	for i, v := range []float64{0.1, 1.0 / 3, 5e-324, math.MaxFloat64, math.Copysign(0, -1), -123456.789e-200} {
		rs[i].Value, rs[i].StdErr = v, -v
	}
	var stored []Receipt
	if err := db.Update(func(tx *Tx) (err error) { stored, err = tx.AppendReceipts(key, rs); return err }); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for _, r := range stored {
		if err := WriteReceiptLine(&buf, r); err != nil {
			t.Fatal(err)
		}
	}
	got, lines, err := ReadReceiptLines(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if math.Float64bits(got[i].Value) != math.Float64bits(stored[i].Value) || lines[i] != i+1 {
			t.Errorf("line %d: value %v, want the bits of %v", lines[i], got[i].Value, stored[i].Value)
		}
	}
	if err := VerifyChain(got, key.Public().(ed25519.PublicKey)); err != nil {
		t.Error(err)
	}
	if err := db.Verify(); err != nil {
		t.Error(err)
	}
}

// bump changes one character into another of the same class, so that the
// JSON stays well formed and only the meaning changes.
func bump(c byte) byte {
	switch {
	case c == '9', c == 'z', c == 'Z', c == 'f':
		return c - 1
	case '0' <= c && c <= '8', 'a' <= c && c <= 'y', 'A' <= c && c <= 'Y':
		return c + 1
	case c == '+':
		return '/'
	case c == '/':
		return '+'
	}
	panic(fmt.Sprintf("bump %q", c))
}

// flipField changes one byte of the first value of field in a stored
// record (the first character inside a string, or the first digit).
func flipField(v []byte, field string) []byte {
	i := bytes.Index(v, []byte(`"`+field+`":`))
	if i < 0 {
		panic("no field " + field)
	}
	i += len(field) + 3
	if v[i] == '"' {
		i++
	}
	out := bytes.Clone(v)
	out[i] = bump(out[i])
	return out
}

func TestVerifyNamesTamperedReceipt(t *testing.T) {
	const target = 5 // round 2, client c1 (3 clients per round)
	cases := []struct {
		field string
		want  Problem
	}{
		{"value", ProblemHash},
		{"stderr", ProblemHash},
		{"payout", ProblemHash},
		{"client", ProblemHash},
		{"round", ProblemHash},
		{"submission_digest", ProblemHash},
		{"contributors", ProblemHash},
		{"prev_hash", ProblemHash},
		{"hash", ProblemHash},
		{"signature", ProblemSignature},
		{"seq", ProblemSeq},
	}
	for _, c := range cases {
		t.Run("field="+c.field, func(t *testing.T) {
			db := openTest(t)
			appendRounds(t, db, "job", 3, 3)
			setRaw(t, db, bucketReceipts, seqKey(target), flipField(rawRecord(t, db, target), c.field))
			err := db.Verify()
			var ve *VerifyError
			if !errors.As(err, &ve) || !errors.Is(err, ErrVerify) {
				t.Fatalf("Verify = %v, want a *VerifyError wrapping ErrVerify", err)
			}
			if ve.Seq != target || ve.Index != target-1 || ve.Problem != c.want {
				t.Errorf("Verify = %v; want seq %d, %s", err, target, c.want)
			}
			if c.field != "round" && ve.Round != 2 {
				t.Errorf("error names round %d, want 2", ve.Round)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("seq %d", target)) {
				t.Errorf("message %q does not name the receipt", err)
			}
		})
	}
}

func TestVerifyStructuralTampering(t *testing.T) {
	cases := []struct {
		name    string
		tamper  func(t *testing.T, db *DB)
		seq     uint64
		problem Problem
	}{
		{"deleted", func(t *testing.T, db *DB) {
			setRaw(t, db, bucketReceipts, seqKey(5), nil)
		}, 6, ProblemSeq},
		{"swapped", func(t *testing.T, db *DB) {
			a, b := rawRecord(t, db, 4), rawRecord(t, db, 5)
			setRaw(t, db, bucketReceipts, seqKey(4), b)
			setRaw(t, db, bucketReceipts, seqKey(5), a)
		}, 4, ProblemSeq},
		{"resigned_with_other_prev", func(t *testing.T, db *DB) {
			// The key holder can sign anything; the chain still shows it.
			key, _ := db.SigningKey()
			var r Receipt
			_ = json.Unmarshal(rawRecord(t, db, 5), &r)
			r.PrevHash = digestOf("elsewhere")
			r.Hash = r.ComputeHash()
			h, _ := hex.DecodeString(r.Hash)
			r.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(key, h))
			v, _ := json.Marshal(r)
			setRaw(t, db, bucketReceipts, seqKey(5), v)
		}, 5, ProblemChain},
		{"not_json", func(t *testing.T, db *DB) {
			setRaw(t, db, bucketReceipts, seqKey(3), []byte("{"))
		}, 3, ProblemEncoding},
		{"unknown_field", func(t *testing.T, db *DB) {
			v := rawRecord(t, db, 3)
			v = append([]byte(`{"bonus":1,`), v[1:]...)
			setRaw(t, db, bucketReceipts, seqKey(3), v)
		}, 3, ProblemEncoding},
		{"renamed_field_case", func(t *testing.T, db *DB) {
			// encoding/json matches field names without regard to case.
			v := bytes.Replace(rawRecord(t, db, 3), []byte(`"value"`), []byte(`"Value"`), 1)
			setRaw(t, db, bucketReceipts, seqKey(3), v)
		}, 3, ProblemEncoding},
		{"index_entry_removed", func(t *testing.T, db *DB) {
			setRaw(t, db, bucketReceiptIdx, indexKey("job", 2, "c0", ""), nil)
		}, 0, ProblemIndex},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db := openTest(t)
			appendRounds(t, db, "job", 3, 3)
			c.tamper(t, db)
			var ve *VerifyError
			if err := db.Verify(); !errors.As(err, &ve) || ve.Seq != c.seq || ve.Problem != c.problem {
				t.Errorf("Verify = %v; want seq %d, %s", err, c.seq, c.problem)
			}
		})
	}
}

// Every single-bit change anywhere in a stored receipt is caught and
// blamed on that receipt. Run on the raw records in memory: the same
// checks as Verify without a commit per flip.
func TestVerifyCatchesEveryBitFlip(t *testing.T) {
	db := openTest(t)
	appendRounds(t, db, "job", 2, 2)
	pub, _ := db.PublicKey()
	var keys, vals [][]byte
	_ = db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucketReceipts)).ForEach(func(k, v []byte) error {
			keys, vals = append(keys, bytes.Clone(k)), append(vals, bytes.Clone(v))
			return nil
		})
	})
	const target = 2 // third record
	// The records before the target are checked once; each flip then
	// starts from a copy of the chain's state after them.
	before := chain{pub: pub}
	for i := range target {
		if _, e := before.stored(i, keys[i], vals[i]); e != nil {
			t.Fatal(e)
		}
	}
	run := func(v []byte) *VerifyError {
		c := before
		_, e := c.stored(target, keys[target], v)
		return e
	}
	if e := run(vals[target]); e != nil {
		t.Fatalf("untouched records fail: %v", e)
	}
	for off := range vals[target] {
		for bit := range 8 {
			v := bytes.Clone(vals[target])
			v[off] ^= 1 << bit
			if e := run(v); e == nil || e.Index != target || e.Seq != target+1 {
				t.Fatalf("flip of bit %d at byte %d (%q) gives %v; want receipt seq %d named", bit, off, vals[target][off], e, target+1)
			}
		}
	}
}

func TestVerifyWrongKey(t *testing.T) {
	db := openTest(t)
	all := appendRounds(t, db, "job", 2, 2)
	other, _, _ := ed25519.GenerateKey(rand.NewChaCha8([32]byte{9}))
	var ve *VerifyError
	if err := db.VerifyWithKey(other); !errors.As(err, &ve) || ve.Seq != 1 || ve.Problem != ProblemSignature {
		t.Errorf("VerifyWithKey(other) = %v, want bad signature at seq 1", err)
	}
	if err := VerifyChain(all, other); !errors.As(err, &ve) || ve.Seq != 1 || ve.Problem != ProblemSignature {
		t.Errorf("VerifyChain(other) = %v, want bad signature at seq 1", err)
	}
	if err := VerifyChain(all, other[:5]); !errors.Is(err, ErrPublicKey) {
		t.Errorf("VerifyChain(short key) = %v, want ErrPublicKey", err)
	}
	pub, _ := db.PublicKey()
	if err := db.VerifyWithKey(pub); err != nil {
		t.Errorf("VerifyWithKey(own key) = %v", err)
	}
}

// clientFile writes client c1's receipts as its receipts file would hold
// them, with a blank line after the first so that line numbers and
// indices differ.
func clientFile(t *testing.T, rs []Receipt) []string {
	t.Helper()
	var lines []string
	for i, r := range rs {
		var b bytes.Buffer
		if err := WriteReceiptLine(&b, r); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, strings.TrimSuffix(b.String(), "\n"))
		if i == 0 {
			lines = append(lines, "")
		}
	}
	return lines
}

func TestVerifyClientFile(t *testing.T) {
	db := openTest(t)
	appendRounds(t, db, "job", 3, 3)
	pub, _ := db.PublicKey()
	mine, _ := db.ReceiptsForClient("c1")
	theirs, _ := db.ReceiptsForClient("c2")
	digests := map[int]string{}
	for r := 1; r <= 3; r++ {
		digests[r] = digestOf(fmt.Sprintf("job/%d/1", r))
	}
	good := clientFile(t, mine) // lines 1, 3, 4 (line 2 is blank)

	cases := []struct {
		name    string
		lines   func() []string
		digests map[int]string
		pub     ed25519.PublicKey
		line    int
		seq     uint64
		problem Problem
	}{
		{"good", func() []string { return good }, digests, pub, 0, 0, ""},
		{"good_without_digests", func() []string { return good }, nil, pub, 0, 0, ""},
		{"tampered_value", func() []string {
			l := append([]string(nil), good...)
			l[2] = string(flipField([]byte(l[2]), "value"))
			return l
		}, digests, pub, 3, mine[1].Seq, ProblemHash},
		{"malformed_line", func() []string {
			l := append([]string(nil), good...)
			l[3] = l[3][:20]
			return l
		}, digests, pub, 4, 0, ProblemEncoding},
		{"other_clients_receipt", func() []string {
			return append(append([]string(nil), good...), clientFile(t, theirs[2:])...)
		}, digests, pub, 5, theirs[2].Seq, ProblemClient},
		{"other_digest", func() []string { return good }, map[int]string{2: digestOf("what I really sent")}, pub, 3, mine[1].Seq, ProblemDigest},
		{"reordered", func() []string {
			return []string{good[2], good[0], good[3]}
		}, digests, pub, 2, mine[0].Seq, ProblemSeq},
		{"wrong_key", func() []string { return good }, digests, theirKey(), 1, mine[0].Seq, ProblemSignature},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := strings.Join(c.lines(), "\n") + "\n"
			rs, err := VerifyClientFile(strings.NewReader(in), c.pub, "c1", c.digests)
			if c.problem == "" {
				if err != nil || len(rs) != len(mine) {
					t.Fatalf("VerifyClientFile = %d receipts, %v", len(rs), err)
				}
				return
			}
			var ve *VerifyError
			if !errors.As(err, &ve) || !errors.Is(err, ErrVerify) {
				t.Fatalf("VerifyClientFile = %v, want a *VerifyError", err)
			}
			if ve.Line != c.line || ve.Seq != c.seq || ve.Problem != c.problem {
				t.Errorf("VerifyClientFile = %v; want line %d, seq %d, %s", err, c.line, c.seq, c.problem)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("line %d:", c.line)) {
				t.Errorf("message %q does not name the line", err)
			}
		})
	}
}

func theirKey() ed25519.PublicKey {
	pub, _, _ := ed25519.GenerateKey(rand.NewChaCha8([32]byte{7}))
	return pub
}

// A ledger cut short still chains; the receipts a client holds expose it.
func TestVerifyIncludedCatchesTruncation(t *testing.T) {
	db := openTest(t)
	all := appendRounds(t, db, "job", 2, 3)
	mine, _ := db.ReceiptsForClient("c2")
	if err := db.VerifyIncluded(mine); err != nil {
		t.Fatalf("VerifyIncluded before truncation = %v", err)
	}
	last := all[len(all)-1]
	setRaw(t, db, bucketReceipts, seqKey(last.Seq), nil)
	setRaw(t, db, bucketReceiptIdx, indexKey(last.Job, last.Round, last.Client, last.Kind), nil)
	if err := db.Verify(); err != nil {
		t.Fatalf("a truncated chain should still verify on its own, got %v", err)
	}
	var ve *VerifyError
	if err := db.VerifyIncluded(mine); !errors.As(err, &ve) || ve.Seq != last.Seq || ve.Problem != ProblemMissing {
		t.Errorf("VerifyIncluded = %v, want seq %d missing", err, last.Seq)
	}
}

func TestSigningKey(t *testing.T) {
	a, b := openTest(t), openTest(t)
	ka, err := a.SigningKey()
	if err != nil {
		t.Fatal(err)
	}
	ka2, _ := a.SigningKey()
	kb, _ := b.SigningKey()
	if !ka.Equal(ka2) || !ka.Equal(kb) {
		t.Error("the key changes between calls, or the seeded source does not determine it")
	}
	c, err := Open(filepath.Join(t.TempDir(), "c.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if kc, _ := c.SigningKey(); kc.Equal(ka) {
		t.Error("crypto/rand gave the seeded test key")
	}
}

func TestPublicKeyFormats(t *testing.T) {
	pub := theirKey()
	s := FormatPublicKey(pub)
	if len(s) != 64 {
		t.Errorf("FormatPublicKey = %q, want 64 hex digits", s)
	}
	for _, in := range []string{s, " " + s + "\n", strings.ToUpper(s), base64.StdEncoding.EncodeToString(pub)} {
		got, err := ParsePublicKey(in)
		if err != nil || !got.Equal(pub) {
			t.Errorf("ParsePublicKey(%q) = %x, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "abcd", s[:63] + "g", base64.RawStdEncoding.EncodeToString(pub) + "!"} {
		if _, err := ParsePublicKey(in); !errors.Is(err, ErrPublicKey) {
			t.Errorf("ParsePublicKey(%q) = %v, want ErrPublicKey", in, err)
		}
	}
}

// A receipt with a transcript head (v3) hashes every transcript field of
// its decryptions and the head; receipts without one hash as before
// (TestCanonicalHashPinned); and AppendReceipts refuses transcript fields
// that do not hold together.
func TestCanonicalTranscriptFields(t *testing.T) {
	base := testReceipts("job", 2, 3)[1]
	base.Seq, base.PrevHash = 5, digestOf("p")
	base.TranscriptHead, base.TranscriptLen = digestOf("head"), 4
	base.Decrypted = []Decryption{
		{Purpose: "moments", Contributors: 3, Seq: 0, Round: 0, Attempt: 1, Request: digestOf("r0"), Status: StatusDecrypted},
		{Purpose: "round", Contributors: 3, Seq: 1, Round: 1, Attempt: 1, Request: digestOf("r1"), Status: StatusFailed},
		{Purpose: "round", Contributors: 3, Seq: 3, Round: 1, Attempt: 2, Request: digestOf("r3"), Status: StatusDecrypted},
	}
	if err := base.validate(); err != nil {
		t.Fatal(err)
	}
	mutations := map[string]func(r *Receipt){
		"seq":             func(r *Receipt) { r.Decrypted[1].Seq = 2 },
		"round":           func(r *Receipt) { r.Decrypted[0].Round = 1 },
		"attempt":         func(r *Receipt) { r.Decrypted[1].Attempt = 2 },
		"request":         func(r *Receipt) { r.Decrypted[2].Request = digestOf("other") },
		"status":          func(r *Receipt) { r.Decrypted[1].Status = StatusDecrypted },
		"transcript_head": func(r *Receipt) { r.TranscriptHead = digestOf("other") },
		"transcript_len":  func(r *Receipt) { r.TranscriptLen = 5 },
		"dropped":         func(r *Receipt) { r.Decrypted = r.Decrypted[1:] },
	}
	h := base.ComputeHash()
	for name, mutate := range mutations {
		t.Run(name, func(t *testing.T) {
			r := base
			r.Decrypted = append([]Decryption(nil), base.Decrypted...)
			mutate(&r)
			if r.ComputeHash() == h {
				t.Errorf("changing %s leaves the hash unchanged", name)
			}
		})
	}
	for name, mutate := range map[string]func(r *Receipt){
		"status unknown":          func(r *Receipt) { r.Decrypted[0].Status = "maybe" },
		"entry beyond the head":   func(r *Receipt) { r.Decrypted[2].Seq = 4 },
		"request not hex":         func(r *Receipt) { r.Decrypted[0].Request = "r0" },
		"transcript without head": func(r *Receipt) { r.TranscriptHead = "" },
	} {
		t.Run(name, func(t *testing.T) {
			r := base
			r.Decrypted = append([]Decryption(nil), base.Decrypted...)
			mutate(&r)
			if err := r.validate(); !errors.Is(err, ErrInvalidReceipt) {
				t.Errorf("err = %v, want ErrInvalidReceipt", err)
			}
		})
	}
}
