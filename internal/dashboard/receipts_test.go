package dashboard

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tallyfl/tally/ledger"
)

// signedReceipts stores rounds 1..rounds for clients c0..c2 in a fresh
// ledger and returns them with the public key.
func signedReceipts(t *testing.T, rounds int) ([]ledger.Receipt, ed25519.PublicKey) {
	t.Helper()
	db, err := ledger.Open(filepath.Join(t.TempDir(), "l.db"), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	key, err := db.SigningKey()
	if err != nil {
		t.Fatal(err)
	}
	var all []ledger.Receipt
	for r := 1; r <= rounds; r++ {
		var batch []ledger.Receipt
		for c := range 3 {
			batch = append(batch, ledger.Receipt{Job: "j", Round: r, Client: fmt.Sprintf("c%d", c), Method: "exact-shapley", Mode: "groups",
				Decrypted: []ledger.Decryption{{Purpose: "group", Contributors: 3}}, Value: float64(r + c), Payout: 10, Quota: 1})
		}
		if err := db.Update(func(tx *ledger.Tx) error {
			got, err := tx.AppendReceipts(key, batch)
			all = append(all, got...)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	return all, key.Public().(ed25519.PublicKey)
}

func mine(rs []ledger.Receipt, client string) []ledger.Receipt {
	var out []ledger.Receipt
	for _, r := range rs {
		if r.Client == client {
			out = append(out, r)
		}
	}
	return out
}

// TestVerifyReceiptsMarksEachBadLine: a receipts file with one receipt
// tampered with, one of another client, a line that is not a receipt and
// a replayed receipt is shown line by line: those four fail, each with
// its reason, the others verify, and the totals count the verified only.
func TestVerifyReceiptsMarksEachBadLine(t *testing.T) {
	all, pub := signedReceipts(t, 4)
	own := mine(all, "c0")
	tampered := own[1]
	tampered.Value += 5
	var b bytes.Buffer
	for _, r := range []ledger.Receipt{own[0], tampered, mine(all, "c1")[2]} {
		ledger.WriteReceiptLine(&b, r)
	}
	b.WriteString("{not a receipt\n")
	ledger.WriteReceiptLine(&b, own[2])
	ledger.WriteReceiptLine(&b, own[0]) // replayed: seq goes back
	ledger.WriteReceiptLine(&b, own[3])
	path := filepath.Join(t.TempDir(), "c0.jsonl")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := VerifyReceipts(path, pub, "c0")
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		ok      bool
		problem string
	}{
		{true, ""}, {false, string(ledger.ProblemHash)}, {false, string(ledger.ProblemClient)}, {false, string(ledger.ProblemEncoding)},
		{true, ""}, {false, string(ledger.ProblemSeq)}, {true, ""},
	}
	if len(got.Rows) != len(want) {
		t.Fatalf("%d rows, want %d: %+v", len(got.Rows), len(want), got.Rows)
	}
	for i, w := range want {
		r := got.Rows[i]
		if r.Line != i+1 || r.Verified != w.ok || !strings.HasPrefix(r.Problem, w.problem) {
			t.Errorf("line %d: line %d verified=%v problem %q; want verified=%v problem %q…", i+1, r.Line, r.Verified, r.Problem, w.ok, w.problem)
		}
	}
	if got.Verified != 3 || got.Failing != 4 {
		t.Errorf("verified %d failing %d, want 3 and 4", got.Verified, got.Failing)
	}
	if wantValue := own[0].Value + own[2].Value + own[3].Value; got.Value != wantValue {
		t.Errorf("total value %v, want %v (verified receipts only)", got.Value, wantValue)
	}

	// Against another key nothing verifies.
	other, _, _ := ed25519.GenerateKey(nil)
	got, err = VerifyReceipts(path, other, "c0")
	if err != nil {
		t.Fatal(err)
	}
	if got.Verified != 0 {
		t.Errorf("%d receipts verify under a key that did not sign them", got.Verified)
	}
}

// TestReceiptsPageIsSelfContained: the rendered page carries its style,
// script and data inline and loads nothing, and a client id with markup
// in it stays text.
func TestReceiptsPageIsSelfContained(t *testing.T) {
	var b bytes.Buffer
	rs := Receipts{Client: `<script>alert(1)</script>`, Rows: []Row{}, Jobs: []string{}}
	if err := WriteReceiptsPage(&b, rs); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, bad := range []string{"<script>alert(1)", `src="`, `href="`, "{{"} {
		if strings.Contains(page, bad) {
			t.Errorf("the page contains %q", bad)
		}
	}
	for _, want := range []string{"tallyChart", "svg.chart", `id="receipts-data"`} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
}

// TestReceiptsServer: the served page is rebuilt from the file at every
// request, so a receipt appended by the running client appears, and its
// policy allows the inline script and nothing from elsewhere.
func TestReceiptsServer(t *testing.T) {
	all, pub := signedReceipts(t, 2)
	own := mine(all, "c1")
	path := filepath.Join(t.TempDir(), "c1.jsonl")
	var b bytes.Buffer
	ledger.WriteReceiptLine(&b, own[0])
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	h := NewReceipts(Config{}, path, pub, "c1").Handler()
	w := get(t, h, "GET", "/", "127.0.0.1:8081", nil)
	if w.Code != 200 || !strings.Contains(w.Header().Get("Content-Security-Policy"), "default-src 'none'") || !strings.Contains(w.Body.String(), `"verified":1`) {
		t.Fatalf("GET /: status %d, CSP %q, body %.300s", w.Code, w.Header().Get("Content-Security-Policy"), w.Body.String())
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	ledger.WriteReceiptLine(f, own[1])
	f.Close()
	w = get(t, h, "GET", "/api/receipts", "127.0.0.1:8081", nil)
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"verified":2`) {
		t.Fatalf("GET /api/receipts after an append: status %d, body %.300s", w.Code, w.Body.String())
	}
}

// TestVerifyReceiptsSettlement: a client's file with two round receipts
// and the settlement of both verifies; the page's payout counts the
// settlement and its value total the rounds only (the settlement's value
// is the period's total, not another round).
func TestVerifyReceiptsSettlement(t *testing.T) {
	db, err := ledger.Open(filepath.Join(t.TempDir(), "l.db"), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	key, err := db.SigningKey()
	if err != nil {
		t.Fatal(err)
	}
	var rs []ledger.Receipt
	batch := []ledger.Receipt{
		{Job: "j", Round: 1, Client: "c0", Value: 0.5, Payout: 1, Quota: 1, Decay: 1},
		{Job: "j", Round: 2, Client: "c0", Value: 0.25, Payout: 1, Quota: 1, Decay: 1},
		{Job: "j", Round: 2, Client: "c0", Kind: ledger.KindSettlement, FromRound: 1, Value: 0.75, Payout: 40, Quota: 8, Decay: 1},
	}
	if err := db.Update(func(tx *ledger.Tx) error {
		rs, err = tx.AppendReceipts(key, batch)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var file bytes.Buffer
	for _, r := range rs {
		if err := ledger.WriteReceiptLine(&file, r); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "c0.jsonl")
	if err := os.WriteFile(path, file.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := VerifyReceipts(path, key.Public().(ed25519.PublicKey), "c0")
	if err != nil {
		t.Fatal(err)
	}
	if got.Verified != 3 || got.Failing != 0 || got.Value != 0.75 || got.Payout != 42 || got.Quota != 10 || got.Rows[2].Kind != ledger.KindSettlement || got.Rows[2].FromRound != 1 {
		t.Errorf("page %+v: want 3 verified, value 0.75, payout 42, quota 10, the third row the settlement of rounds 1–2", got)
	}
}
