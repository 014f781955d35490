package ledger

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// openTest opens a fresh database in the test's temporary directory with a
// seeded key source, closed at the end of the test.
func openTest(t testing.TB) *DB {
	t.Helper()
	return openAt(t, filepath.Join(t.TempDir(), "tally.db"))
}

func openAt(t testing.TB, path string) *DB {
	t.Helper()
	db, err := Open(path, Options{Rand: rand.NewChaCha8([32]byte{1})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

type roundState struct {
	Round   int       `json:"round"`
	Clients []string  `json:"clients"`
	Loss    float64   `json:"loss"`
	Model   []float64 `json:"model,omitempty"`
}

func TestPutGetRoundTrip(t *testing.T) {
	db := openTest(t)
	in := roundState{Round: 3, Clients: []string{"a", "b"}, Loss: 0.125, Model: []float64{1, -2.5}}
	err := db.Update(func(tx *Tx) error {
		if err := tx.Put("rounds", RoundKey(3), in); err != nil {
			return err
		}
		return tx.PutRaw("models", RoundKey(3), []byte{0, 1, 2})
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *Tx) error {
		var out roundState
		ok, err := tx.Get("rounds", RoundKey(3), &out)
		if err != nil || !ok {
			t.Fatalf("Get = %v, %v", ok, err)
		}
		if !slices.Equal(out.Clients, in.Clients) || !slices.Equal(out.Model, in.Model) || out.Loss != in.Loss {
			t.Errorf("Get = %+v, want %+v", out, in)
		}
		raw, ok, err := tx.GetRaw("models", RoundKey(3))
		if err != nil || !ok || !bytes.Equal(raw, []byte{0, 1, 2}) {
			t.Errorf("GetRaw = %v, %v, %v", raw, ok, err)
		}
		for _, c := range []struct{ bucket, key string }{{"rounds", RoundKey(4)}, {"nobucket", "x"}} {
			ok, err := tx.Get(c.bucket, c.key, &out)
			if ok || err != nil {
				t.Errorf("Get(%s/%s) = %v, %v, want false, nil", c.bucket, c.key, ok, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Delete removes the record; deleting again or from a missing bucket is fine.
	err = db.Update(func(tx *Tx) error {
		for _, c := range []struct{ bucket, key string }{{"rounds", RoundKey(3)}, {"rounds", RoundKey(3)}, {"nobucket", "x"}} {
			if err := tx.Delete(c.bucket, c.key); err != nil {
				return err
			}
		}
		return tx.DeleteBucket("models")
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.View(func(tx *Tx) error {
		if ok, _ := tx.Get("rounds", RoundKey(3), new(roundState)); ok {
			t.Error("record still there after Delete")
		}
		if _, ok, _ := tx.GetRaw("models", RoundKey(3)); ok {
			t.Error("bucket still there after DeleteBucket")
		}
		return nil
	})
}

func TestForEachOrderPrefixAndLast(t *testing.T) {
	db := openTest(t)
	rounds := []int{10, 2, 1, 100, 0}
	err := db.Update(func(tx *Tx) error {
		for _, r := range rounds {
			if err := tx.Put("rounds", RoundKey(r), roundState{Round: r}); err != nil {
				return err
			}
			if err := tx.Put("clients", "job1/"+RoundKey(r), r); err != nil {
				return err
			}
		}
		return tx.Put("clients", "job2/x", -1)
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.View(func(tx *Tx) error {
		var got []int
		err := tx.ForEach("rounds", func(k string, v []byte) error {
			r, err := ParseRoundKey(k)
			got = append(got, r)
			return err
		})
		if err != nil || !slices.Equal(got, []int{0, 1, 2, 10, 100}) {
			t.Errorf("ForEach order = %v, %v; want numeric order", got, err)
		}
		n := 0
		_ = tx.ForEachPrefix("clients", "job1/", func(k string, v []byte) error { n++; return nil })
		if n != len(rounds) {
			t.Errorf("ForEachPrefix visited %d, want %d", n, len(rounds))
		}
		stop := errors.New("stop")
		if err := tx.ForEach("rounds", func(string, []byte) error { return stop }); !errors.Is(err, stop) {
			t.Errorf("ForEach error = %v, want the callback's", err)
		}
		if err := tx.ForEach("missing", func(string, []byte) error { return stop }); err != nil {
			t.Errorf("ForEach on a missing bucket = %v", err)
		}
		k, v, ok, err := tx.Last("rounds")
		if err != nil || !ok || k != RoundKey(100) || !bytes.Contains(v, []byte(`"round":100`)) {
			t.Errorf("Last = %q, %s, %v, %v", k, v, ok, err)
		}
		if _, _, ok, _ := tx.Last("missing"); ok {
			t.Error("Last on a missing bucket reported a record")
		}
		return nil
	})
}

func TestReservedBucketsRefused(t *testing.T) {
	db := openTest(t)
	for _, name := range []string{"", bucketReceipts, bucketMeta, "_ledger/anything"} {
		t.Run("bucket="+name, func(t *testing.T) {
			err := db.Update(func(tx *Tx) error { return tx.Put(name, "k", 1) })
			if !errors.Is(err, ErrReservedBucket) {
				t.Errorf("Put = %v, want ErrReservedBucket", err)
			}
			err = db.View(func(tx *Tx) error { _, err := tx.Get(name, "k", new(int)); return err })
			if !errors.Is(err, ErrReservedBucket) {
				t.Errorf("Get = %v, want ErrReservedBucket", err)
			}
		})
	}
}

func TestViewRefusesWrites(t *testing.T) {
	db := openTest(t)
	err := db.View(func(tx *Tx) error { return tx.Put("b", "k", 1) })
	if !errors.Is(err, ErrReadOnly) {
		t.Errorf("Put in View = %v, want ErrReadOnly", err)
	}
	err = db.View(func(tx *Tx) error { _, err := tx.AppendReceipts(nil, nil); return err })
	if !errors.Is(err, ErrReadOnly) {
		t.Errorf("AppendReceipts in View = %v, want ErrReadOnly", err)
	}
}

// A failed step must leave no trace: neither its records nor its receipts.
func TestUpdateErrorWritesNothing(t *testing.T) {
	db := openTest(t)
	key, err := db.SigningKey()
	if err != nil {
		t.Fatal(err)
	}
	step := func(fail error, panicking bool) func(tx *Tx) error {
		return func(tx *Tx) error {
			if err := tx.Put("rounds", RoundKey(1), roundState{Round: 1}); err != nil {
				return err
			}
			if _, err := tx.AppendReceipts(key, testReceipts("job", 1, 3)); err != nil {
				return err
			}
			if panicking {
				panic("killed mid-step")
			}
			return fail
		}
	}
	empty := func(t *testing.T) {
		t.Helper()
		_ = db.View(func(tx *Tx) error {
			if ok, _ := tx.Get("rounds", RoundKey(1), new(roundState)); ok {
				t.Error("record of the failed step was kept")
			}
			if rs, _ := tx.Receipts(Filter{}); len(rs) != 0 {
				t.Errorf("%d receipts of the failed step were kept", len(rs))
			}
			if tx.HasReceiptsForRound("job", 1) {
				t.Error("receipt index of the failed step was kept")
			}
			return nil
		})
	}
	t.Run("error", func(t *testing.T) {
		boom := errors.New("boom")
		if err := db.Update(step(boom, false)); !errors.Is(err, boom) {
			t.Fatalf("Update = %v, want the function's error", err)
		}
		empty(t)
	})
	t.Run("panic", func(t *testing.T) {
		func() {
			defer func() { _ = recover() }()
			_ = db.Update(step(nil, true))
		}()
		empty(t)
	})
	t.Run("then_success", func(t *testing.T) {
		if err := db.Update(step(nil, false)); err != nil {
			t.Fatal(err)
		}
		if err := db.Verify(); err != nil {
			t.Fatal(err)
		}
		rs, _ := db.Receipts(Filter{})
		if len(rs) != 3 || rs[0].Seq != 1 {
			t.Errorf("after failed steps, receipts = %d starting at seq %d; want 3 from seq 1", len(rs), rs[0].Seq)
		}
	})
}

func TestSecondOpenIsLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "coord.db")
	db := openAt(t, path)
	for _, ro := range []bool{false, true} {
		_, err := Open(path, Options{LockTimeout: 20 * time.Millisecond, ReadOnly: ro})
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("second Open(readOnly=%v) = %v, want ErrLocked", ro, err)
		}
		if !strings.Contains(err.Error(), path) {
			t.Errorf("error %q does not name the file", err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db2, err := Open(path, Options{LockTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatalf("Open after Close = %v", err)
	}
	_ = db2.Close()
}

func TestReopenKeepsStateAndKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "coord.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	key1, err := db.SigningKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *Tx) error { return tx.Put("jobs", "j", "spec") }); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()

	db, err = Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	key2, err := db.SigningKey()
	if err != nil || !key1.Equal(key2) {
		t.Errorf("key after reopen differs (err %v)", err)
	}
	var spec string
	err = db.View(func(tx *Tx) error { _, err := tx.Get("jobs", "j", &spec); return err })
	if err != nil || spec != "spec" {
		t.Errorf("record after reopen = %q, %v", spec, err)
	}
	if err := db.Update(func(*Tx) error { return nil }); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Update on a read-only DB = %v, want ErrReadOnly", err)
	}
}

func TestReadOnlyWithoutKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "coord.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	db, err = Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.PublicKey(); !errors.Is(err, ErrNoKey) {
		t.Errorf("PublicKey = %v, want ErrNoKey", err)
	}
	if err := db.Verify(); !errors.Is(err, ErrNoKey) {
		t.Errorf("Verify = %v, want ErrNoKey", err)
	}
}

func TestForeignFileRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "other.db")
	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = b.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("theirs")); return err })
	_ = b.Close()
	for _, ro := range []bool{false, true} {
		if _, err := Open(path, Options{ReadOnly: ro}); !errors.Is(err, ErrFormat) {
			t.Errorf("Open(readOnly=%v) of a foreign bbolt file = %v, want ErrFormat", ro, err)
		}
	}
}

func TestRoundKey(t *testing.T) {
	for _, r := range []int{0, 1, 9, 10, 12345, 9_999_999_999} {
		k := RoundKey(r)
		got, err := ParseRoundKey(k)
		if err != nil || got != r || len(k) != 10 {
			t.Errorf("RoundKey(%d) = %q, parsed %d, %v", r, k, got, err)
		}
	}
	if RoundKey(9) >= RoundKey(10) {
		t.Error("RoundKey does not sort numerically")
	}
	for _, k := range []string{"", "12", "000000000x", "-000000001"} {
		if _, err := ParseRoundKey(k); err == nil {
			t.Errorf("ParseRoundKey(%q) accepted", k)
		}
	}
	for _, r := range []int{-1, 10_000_000_000} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("RoundKey(%d) did not panic", r)
				}
			}()
			RoundKey(r)
		}()
	}
}
