package ledger

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// filledFile writes a closed ledger of 30 rounds of 5 receipts, many
// pages, and returns its path.
func filledFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	appendRounds(t, db, "job", 30, 5)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// newerMeta returns the meta page of the newer transaction.
func newerMeta(raw []byte) []byte {
	ps := int(binary.LittleEndian.Uint32(raw[24:]))
	if binary.LittleEndian.Uint64(raw[ps+64:]) > binary.LittleEndian.Uint64(raw[64:]) {
		return raw[ps : 2*ps]
	}
	return raw[:ps]
}

// usedBytes is the size of the pages in use (the high-water mark).
func usedBytes(raw []byte) int {
	m := newerMeta(raw)
	return int(binary.LittleEndian.Uint64(m[56:])) * int(binary.LittleEndian.Uint32(m[24:]))
}

// flipRootTypeBit flips one bit of the page type of the root bucket's page
// (named by the newer meta page), a page every read goes through.
func flipRootTypeBit(t *testing.T, raw []byte) {
	t.Helper()
	ps := int(binary.LittleEndian.Uint32(raw[24:]))
	meta := newerMeta(raw)
	root := int(binary.LittleEndian.Uint64(meta[32:]))
	raw[root*ps+8] ^= 0x08
}

// TestOpenRefusesDamagedFile: an existing state file that is empty, cut
// to half its size, has a flipped bit in a data page or in both meta pages
// is refused by Open, read-only or not, with an error that names the file
// and the problem, and is left byte for byte as it was. Before, the empty
// file became a new ledger and the half file crashed the process.
func TestOpenRefusesDamagedFile(t *testing.T) {
	cases := []struct {
		name   string
		damage func(raw []byte) []byte
		want   string
	}{
		{"empty", func([]byte) []byte { return nil }, "is empty"},
		// bbolt grows a file ahead of its use, so half of the file may
		// still hold every page in use: cut half of the pages in use.
		{"truncated-half", func(raw []byte) []byte { return raw[:usedBytes(raw)/2] }, "is truncated"},
		{"truncated-one-page", func(raw []byte) []byte { return raw[:usedBytes(raw)-4096] }, "is truncated"},
		{"truncated-inside-meta", func(raw []byte) []byte { return raw[:100] }, "is truncated"},
		{"bit-flip-data-page", func(raw []byte) []byte { flipRootTypeBit(t, raw); return raw }, "ledger: state file is damaged"},
		{"bit-flip-both-meta-pages", func(raw []byte) []byte {
			ps := int(binary.LittleEndian.Uint32(raw[24:]))
			raw[40] ^= 1
			raw[ps+40] ^= 1
			return raw
		}, "has no valid meta page"},
	}
	for _, c := range cases {
		for _, ro := range []bool{false, true} {
			name := c.name + "/read-write"
			if ro {
				name = c.name + "/read-only"
			}
			t.Run(name, func(t *testing.T) {
				path := filledFile(t)
				raw, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				damaged := c.damage(bytes.Clone(raw))
				if err := os.WriteFile(path, damaged, 0o600); err != nil {
					t.Fatal(err)
				}
				db, err := Open(path, Options{ReadOnly: ro})
				if err == nil {
					db.Close()
					t.Fatalf("Open of a damaged file succeeded")
				}
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), c.want) {
					t.Errorf("Open = %v; want ErrCorrupt naming %s and %q", err, path, c.want)
				}
				after, _ := os.ReadFile(path)
				if !bytes.Equal(after, damaged) {
					t.Errorf("Open modified the damaged file: %d bytes before, %d after", len(damaged), len(after))
				}
				t.Log(err)
			})
		}
	}
}

// TestCheckReportsOneBadMetaPage: with one meta page damaged bbolt opens
// the file at the other one, which after a torn write is right and after a
// bit flip may lose the last commit; Open accepts the file and Check, what
// `tally ledger verify` runs, names the page.
func TestCheckReportsOneBadMetaPage(t *testing.T) {
	path := filledFile(t)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	raw[40] ^= 1
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("Open with one valid meta page: %v", err)
	}
	defer db.Close()
	err = db.Check()
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "meta page 0: checksum mismatch") {
		t.Errorf("Check = %v, want meta page 0 named", err)
	}
}

// TestCreateLeavesNoPartialFile: a new ledger appears at its path only
// whole; no temporary file is left behind.
func TestCreateLeavesNoPartialFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "new.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Check(); err != nil {
		t.Errorf("Check of a new ledger: %v", err)
	}
	db.Close()
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "new.db" {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %v, want only new.db", names)
	}
}
