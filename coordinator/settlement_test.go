package coordinator

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/ledger"
)

// TestSettlementReceiptsOnce: the record of a period's last round carries
// its settlement; applied twice (a step replayed after a crash), the state
// file holds one round receipt and one settlement receipt per client, the
// ledger verifies, a client's own receipts include its settlement, and the
// settlement's receipts survive reopening the file.
func TestSettlementReceiptsOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := OpenBoltStore(path, "job")
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{"c0", "c1"}
	rec := &engine.RoundRecord{Round: 3, Contributors: ids, Digests: map[string][32]byte{},
		Valuation: &engine.RoundValuation{Mode: engine.ModePlain, Method: "exact-shapley", Decay: 0.9,
			Values: map[string]float64{"c0": 0.2, "c1": -0.1}, StdErr: map[string]float64{},
			Payouts: map[string]float64{"c0": 1, "c1": 1}, Quotas: map[string]float64{"c0": 2, "c1": 2}},
		Settlement: &engine.Settlement{From: 1, Through: 3, Rounds: 3, Done: 3, Budget: 30, Escrow: 24, Decay: 0.9,
			Values: map[string]float64{"c0": 0.5, "c1": -0.2}, Payouts: map[string]float64{"c0": 24, "c1": 0},
			Quotas: map[string]float64{"c0": 8, "c1": 0}, Balance: map[string]float64{"c0": 14, "c1": 6}}}
	for _, id := range ids {
		rec.Digests[id] = sha256.Sum256([]byte(id))
	}
	for range 2 {
		if err := s.Apply(engine.ActPersist{Round: rec}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = OpenBoltStore(path, "job"); err != nil {
		t.Fatalf("reopening (which verifies the ledger): %v", err)
	}
	defer s.Close()
	rs, err := s.DB().Receipts(ledger.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, r := range rs {
		count[fmt.Sprintf("%s/%d/%s", r.Client, r.Round, r.Kind)]++
	}
	want := map[string]int{"c0/3/": 1, "c1/3/": 1, "c0/3/settlement": 1, "c1/3/settlement": 1}
	if fmt.Sprint(count) != fmt.Sprint(want) {
		t.Fatalf("receipts %v, want %v", count, want)
	}
	own, err := s.Receipts("c0", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(own) != 2 || own[1].Kind != ledger.KindSettlement || own[1].Payout != 24 || own[1].FromRound != 1 || own[1].Decay != 0.9 {
		t.Fatalf("c0's receipts %+v, want its round receipt and its settlement paying 24", own)
	}
	var file bytes.Buffer
	for _, r := range own {
		if err := ledger.WriteReceiptLine(&file, r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ledger.VerifyClientFile(&file, s.PublicKey(), "c0", map[int]string{3: fmt.Sprintf("%x", rec.Digests["c0"])}); err != nil {
		t.Fatalf("c0's receipts do not verify as a client file: %v", err)
	}
}
