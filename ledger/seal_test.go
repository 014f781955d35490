package ledger

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// flipInFile flips the lowest bit of the one byte of the file where marker
// starts at offset off, and fails unless marker occurs exactly once.
func flipInFile(t *testing.T, path string, marker []byte, off int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(b, marker); n != 1 {
		t.Fatalf("marker %q occurs %d times in %s, want once", marker, n, path)
	}
	b[bytes.Index(b, marker)+off] ^= 1
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A bit flipped inside a caller record's value passes bbolt's page checks
// (they cover the tree, not the data) and, if it turns one digit into
// another, decodes: before records were sealed, Get returned a client's
// weight 1234 as 1235 without a word. Every read now checks the record's
// checksum and refuses it, naming the file and the record.
func TestBitFlipInRecordRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tally.db")
	type client struct {
		ID     string `json:"id"`
		Weight int    `json:"weight"`
	}
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *Tx) error {
		if err := tx.Put("clients", "hospital-7", client{"hospital-7", 1234}); err != nil {
			return err
		}
		return tx.PutRaw("models", "0000000001", []byte("MODEL-BYTES-0123456789"))
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	flipInFile(t, path, []byte(`"weight":1234`), len(`"weight":123`)) // '4' (0x34) → '5' (0x35)
	flipInFile(t, path, []byte("MODEL-BYTES-0123456789"), 12)         // '0' → '1'

	db, err = Open(path, Options{})
	if err != nil {
		t.Fatalf("Open after a flipped data byte: %v (bbolt's structure is intact, the record is not)", err)
	}
	defer db.Close()
	err = db.View(func(tx *Tx) error {
		var c client
		ok, err := tx.Get("clients", "hospital-7", &c)
		if err == nil {
			t.Errorf("Get returned %+v (ok %v) from a damaged record, want ErrCorrupt", c, ok)
		} else if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "clients/hospital-7") {
			t.Errorf("Get: %v; want ErrCorrupt naming %s and clients/hospital-7", err, path)
		}
		if v, _, err := tx.GetRaw("models", "0000000001"); !errors.Is(err, ErrCorrupt) {
			t.Errorf("GetRaw = %q, %v; want ErrCorrupt", v, err)
		}
		if err := tx.ForEach("clients", func(string, []byte) error { return nil }); !errors.Is(err, ErrCorrupt) {
			t.Errorf("ForEach: %v; want ErrCorrupt", err)
		}
		if _, v, _, err := tx.Last("models"); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Last = %q, %v; want ErrCorrupt", v, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A record copied over another key (a damaged page, or an editor) keeps a
// valid value but no longer belongs where it is: the seal covers the key.
func TestRecordUnderAnotherKeyRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tally.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *Tx) error { return tx.PutRaw("clients", "a", []byte(`{"weight":1}`)) }); err != nil {
		t.Fatal(err)
	}
	if err := db.bolt.Update(func(btx *bolt.Tx) error {
		b := btx.Bucket([]byte("clients"))
		return b.Put([]byte("b"), bytes.Clone(b.Get([]byte("a"))))
	}); err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *Tx) error {
		if v, _, err := tx.GetRaw("clients", "a"); err != nil || string(v) != `{"weight":1}` {
			t.Errorf("GetRaw(a) = %q, %v; want the record back", v, err)
		}
		if v, _, err := tx.GetRaw("clients", "b"); !errors.Is(err, ErrCorrupt) {
			t.Errorf("GetRaw(b) = %q, %v; want ErrCorrupt (a's record under b's key)", v, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A file written before records were sealed (format 1) opens, reads and
// writes as before.
func TestUnsealedFormatStillReads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Update(func(tx *bolt.Tx) error {
		m, err := tx.CreateBucket([]byte(bucketMeta))
		if err != nil {
			return err
		}
		if err := m.Put([]byte(metaKeyFormat), []byte(FormatUnsealed)); err != nil {
			return err
		}
		for _, name := range []string{bucketReceipts, bucketReceiptIdx} {
			if _, err := tx.CreateBucket([]byte(name)); err != nil {
				return err
			}
		}
		c, err := tx.CreateBucket([]byte("clients"))
		if err != nil {
			return err
		}
		return c.Put([]byte("a"), []byte(`{"weight":7}`))
	}); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *Tx) error { return tx.PutRaw("clients", "b", []byte(`{"weight":8}`)) }); err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *Tx) error {
		for k, want := range map[string]string{"a": `{"weight":7}`, "b": `{"weight":8}`} {
			if v, ok, err := tx.GetRaw("clients", k); err != nil || !ok || string(v) != want {
				t.Errorf("GetRaw(%s) = %q, %v, %v; want %s", k, v, ok, err, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Check, which `tally ledger verify` and `backup` run, reads every sealed
// record, so damage is found before a coordinator trips on it.
func TestCheckFindsDamagedRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tally.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *Tx) error { return tx.PutRaw("rounds", "0000000003", []byte("ROUND-THREE-STATE")) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Check(); err != nil {
		t.Fatalf("Check of an intact file: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	flipInFile(t, path, []byte("ROUND-THREE-STATE"), 3)
	db, err = Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Check(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "rounds/0000000003") {
		t.Errorf("Check: %v; want ErrCorrupt naming rounds/0000000003", err)
	}
}
