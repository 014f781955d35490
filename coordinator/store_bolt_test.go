package coordinator

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/ledger"
)

// storeJob is a validated 4-client job without data files, for the store
// tests: nothing here runs it.
func storeJob(t *testing.T, edit func(*engine.JobConfig)) engine.Job {
	t.Helper()
	cfg := engine.JobConfig{
		ID: "stored", Seed: 3, Rounds: 30,
		Data:              engine.DataConfig{Features: 4, Classes: 2},
		Clients:           engine.ClientsConfig{Min: 2},
		SecureAggregation: "he",
		Committee:         engine.CommitteeConfig{Size: 3, Threshold: 2},
		HEParams:          insecureHE(),
		MinGroupSize:      2,
	}
	for i := range 4 {
		cfg.Clients.Enrolment = append(cfg.Clients.Enrolment, engine.EnrolmentConfig{ID: fmt.Sprintf("c%d", i), Token: fmt.Sprintf("token-%d-stored", i)})
	}
	if edit != nil {
		edit(&cfg)
	}
	job, err := engine.NewJob(cfg, ".")
	if err != nil {
		t.Fatal(err)
	}
	return job
}

// filledStore writes 30 completed rounds of 4 clients (model, round
// record, receipts) into a new state file of job, closes it and returns
// its path.
func filledStore(t *testing.T, job engine.Job) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := OpenJobStore(path, job, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids := job.ClientIDs()
	for r := 1; r <= 30; r++ {
		rec := &engine.RoundRecord{Round: r, Selected: ids, Contributors: ids, Digests: map[string][32]byte{},
			Valuation: &engine.RoundValuation{Mode: engine.ModeInfluence, Method: engine.MethodInfluence, Values: map[string]float64{}, StdErr: map[string]float64{},
				Payouts: map[string]float64{}, Quotas: map[string]float64{}}}
		for i, id := range ids {
			rec.Digests[id] = sha256.Sum256([]byte(fmt.Sprintf("%d/%s", r, id)))
			rec.Valuation.Values[id] = float64(i) / float64(r)
		}
		global := make([]float64, 500)
		for i := range global {
			global[i] = float64(r*i) / 7
		}
		if err := s.Apply(engine.ActPersist{Round: rec, Global: global}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// usedBytes is the size of a bbolt file's pages in use, from its newer
// meta page (the layout is described in ledger/check.go).
func usedBytes(raw []byte) int {
	m := newerMeta(raw)
	return int(binary.LittleEndian.Uint64(m[56:])) * int(binary.LittleEndian.Uint32(m[24:]))
}

func newerMeta(raw []byte) []byte {
	ps := int(binary.LittleEndian.Uint32(raw[24:]))
	if binary.LittleEndian.Uint64(raw[ps+64:]) > binary.LittleEndian.Uint64(raw[64:]) {
		return raw[ps : 2*ps]
	}
	return raw[:ps]
}

// flipRootTypeBit flips one bit of the page type of the root bucket's page.
func flipRootTypeBit(raw []byte) {
	ps := int(binary.LittleEndian.Uint32(raw[24:]))
	root := int(binary.LittleEndian.Uint64(newerMeta(raw)[32:]))
	raw[root*ps+8] ^= 0x08
}

// flipReceiptValue flips the low bit of the first character of the value
// in the receipt of round 30 for client c1, as a bit flip inside a data
// page would. bbolt copies pages on write and leaves the old versions in
// free pages, so the same bytes may appear more than once and only one is
// live: every copy is flipped.
func flipReceiptValue(t *testing.T, raw []byte) {
	t.Helper()
	key := []byte(`"round":30,"client":"c1"`)
	n := 0
	for i := 0; ; {
		j := bytes.Index(raw[i:], key)
		if j < 0 {
			break
		}
		i += j
		k := bytes.Index(raw[i:], []byte(`"value":`))
		raw[i+k+len(`"value":`)] ^= 0x01
		i += k
		n++
	}
	if n == 0 {
		t.Fatal("no receipt of round 30, c1 in the file")
	}
}

// TestOpenJobStoreRefusesDamagedOrForeignFile: an existing state file that
// is empty, truncated (to half, or by one page), has a bit flipped in a
// page header or inside a receipt, or belongs to the same job id with
// other defining settings, is refused with an error naming the file and
// the problem, and the file is not modified. Before, the empty file
// became a new job with a new signing key, the truncated one panicked in
// bbolt, and the changed job resumed the old one silently.
func TestOpenJobStoreRefusesDamagedOrForeignFile(t *testing.T) {
	job := storeJob(t, nil)
	cases := []struct {
		name   string
		damage func(raw []byte) []byte
		job    engine.Job
		want   []string
		is     error
	}{
		{"empty", func([]byte) []byte { return nil }, job, []string{"is empty"}, ledger.ErrCorrupt},
		{"truncated-half", func(raw []byte) []byte { return raw[:usedBytes(raw)/2] }, job, []string{"is truncated"}, ledger.ErrCorrupt},
		{"truncated-one-page", func(raw []byte) []byte { return raw[:usedBytes(raw)-4096] }, job, []string{"is truncated"}, ledger.ErrCorrupt},
		{"bit-flip-page-header", func(raw []byte) []byte { flipRootTypeBit(raw); return raw }, job, []string{"page"}, ledger.ErrCorrupt},
		{"bit-flip-receipt", func(raw []byte) []byte { flipReceiptValue(t, raw); return raw }, job, []string{`client "c1"`}, ledger.ErrVerify},
		{"changed-job", func(raw []byte) []byte { return raw }, storeJob(t, func(c *engine.JobConfig) {
			c.SecureAggregation = "none"
			c.Valuation.Mode = engine.ModePlain
			c.Seed = 4
		}), []string{`secure_aggregation: state file has "he", job file has "none"`, "seed: state file has 3, job file has 4",
			`valuation.mode: state file has "projection", job file has "plain"`, "--state"}, ErrJobChanged},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filledStore(t, job)
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			damaged := c.damage(bytes.Clone(raw))
			if err := os.WriteFile(path, damaged, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := OpenJobStore(path, c.job, nil)
			if err == nil {
				snap, _ := s.Load()
				s.Close()
				t.Fatalf("OpenJobStore succeeded (%d rounds loaded)", len(snap.Rounds))
			}
			if !errors.Is(err, c.is) || !strings.Contains(err.Error(), path) {
				t.Errorf("OpenJobStore = %v; want %v naming %s", err, c.is, path)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
			after, _ := os.ReadFile(path)
			if !bytes.Equal(after, damaged) {
				t.Errorf("the refused file was modified (%d bytes before, %d after)", len(damaged), len(after))
			}
			t.Log(err)
		})
	}
}

// TestOpenJobStoreOperationalChanges: changing only operational fields
// (address, timeouts, tokens, rounds raised) resumes the job.
func TestOpenJobStoreOperationalChanges(t *testing.T) {
	path := filledStore(t, storeJob(t, nil))
	job := storeJob(t, func(c *engine.JobConfig) {
		c.Listen = "127.0.0.1:7999"
		c.RoundTimeout = engine.Duration(5 * time.Minute)
		c.Rounds = 40
		c.Clients.Enrolment[0].Token = "another-token-0"
		c.Valuation.Estimator.Workers = 7
	})
	s, err := OpenJobStore(path, job, nil)
	if err != nil {
		t.Fatalf("operational changes refused: %v", err)
	}
	defer s.Close()
	snap, err := s.Load()
	if err != nil || len(snap.Rounds) != 30 {
		t.Fatalf("Load = %d rounds, %v; want the 30 stored", len(snap.Rounds), err)
	}
}

// TestOpenJobStoreRecordsIdentityOfOldFile: a state file written before
// identities were recorded opens, and records the identity of the job
// file it was opened with, so that the next change is caught.
func TestOpenJobStoreRecordsIdentityOfOldFile(t *testing.T) {
	job := storeJob(t, nil)
	path := filepath.Join(t.TempDir(), "old.db")
	s, err := OpenBoltStore(path, job.ID) // what the previous tally wrote
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = OpenJobStore(path, job, nil); err != nil {
		t.Fatalf("old state file refused: %v", err)
	}
	s.Close()
	changed := storeJob(t, func(c *engine.JobConfig) { c.Model.Kind = "mlp" })
	if _, err := OpenJobStore(path, changed, nil); !errors.Is(err, ErrJobChanged) || !strings.Contains(err.Error(), `model.kind: state file has "logreg", job file has "mlp"`) {
		t.Errorf("after recording, a changed model = %v, want ErrJobChanged naming model.kind", err)
	}
}

// TestIdentityCoversEveryDefiningField: every field of the job file is
// either in the identity or listed as operational.
func TestIdentityCoversEveryDefiningField(t *testing.T) {
	id, err := IdentityOf(storeJob(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"seed", "model.kind", "train.learning_rate", "data.features", "data.classes", "clients.min", "clients.fraction",
		"clients.enrolment.ids", "scaling.mode", "secure_aggregation", "committee.size", "committee.threshold", "min_group_size",
		"he_params.log_n", "valuation.mode", "valuation.method", "valuation.estimator.seed", "payment.budget_per_round"} {
		if _, ok := id.Fields[f]; !ok {
			t.Errorf("identity lacks %s", f)
		}
	}
	for _, f := range []string{"listen", "rounds", "round_timeout", "tick", "clients.liveness", "valuation.estimator.workers"} {
		if _, ok := id.Fields[f]; ok {
			t.Errorf("identity holds operational field %s", f)
		}
	}
}

// The decryption transcript is kept in the state file: each entry under
// its sequence number, replaced when more signatures arrive, read back in
// order; a gap in the stored sequence is refused with the file named.
func TestBoltStoreKeepsTranscript(t *testing.T) {
	job := storeJob(t, nil)
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := OpenJobStore(path, job, nil)
	if err != nil {
		t.Fatal(err)
	}
	entries := [][]byte{[]byte("entry 0"), []byte("entry 1 unsigned")}
	for i, e := range entries {
		if err := s.Apply(engine.ActPersist{Transcript: &engine.TranscriptRecord{Seq: i, Entry: e}}); err != nil {
			t.Fatal(err)
		}
	}
	entries[1] = []byte("entry 1 signed")
	if err := s.Apply(engine.ActPersist{Transcript: &engine.TranscriptRecord{Seq: 1, Entry: entries[1]}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = OpenJobStore(path, job, nil)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Transcript) != 2 || !bytes.Equal(snap.Transcript[0], entries[0]) || !bytes.Equal(snap.Transcript[1], entries[1]) {
		t.Fatalf("transcript read back as %q, want %q", snap.Transcript, entries)
	}
	if err := s.Apply(engine.ActPersist{Transcript: &engine.TranscriptRecord{Seq: 3, Entry: []byte("after a gap")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("a gap in the stored transcript: err = %v, want one naming %s", err, path)
	}
	s.Close()
}
