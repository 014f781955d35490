package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestEveryClientKeepsItsLastReceipts: when the job ends, the coordinator
// may stop as soon as every client has been told, so the entries of the
// decryption transcript that the last receipts name must ride on the
// DoneTask. They did not: a client whose member had not been sent them
// (a batch's entries are made by each member from the requests) fetched
// them with Receipts from a coordinator already gone and dropped its last
// round's and the settlement's receipts ("names transcript entry 28, the
// coordinator sent 19 so far").
func TestEveryClientKeepsItsLastReceipts(t *testing.T) {
	dir := t.TempDir()
	receipts := filepath.Join(dir, "receipts")
	const clients, rounds = 8, 3
	rep, err := simulate(context.Background(), simOpts(t, "--dataset", "breast-cancer", "--clients", fmt.Sprint(clients), "--rounds", fmt.Sprint(rounds),
		"--seed", "1", "--centralised=false", "--db", filepath.Join(dir, "job.db"), "--receipts-dir", receipts), io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rounds) != rounds {
		t.Fatalf("%d rounds, want %d", len(rep.Rounds), rounds)
	}
	for i := range clients {
		b, err := os.ReadFile(filepath.Join(receipts, fmt.Sprintf("client-%d.jsonl", i)))
		if err != nil {
			t.Fatal(err)
		}
		// One receipt a round and the settlement's.
		if n := bytes.Count(b, []byte("\n")); n != rounds+1 {
			t.Errorf("client-%d kept %d receipts, want %d", i, n, rounds+1)
		}
	}
}
