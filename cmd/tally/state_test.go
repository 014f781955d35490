package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The layout of a bbolt file's meta pages is described in ledger/check.go.

// newerMeta returns the meta page of the newer transaction.
func newerMeta(raw []byte) []byte {
	ps := int(binary.LittleEndian.Uint32(raw[24:]))
	if binary.LittleEndian.Uint64(raw[ps+64:]) > binary.LittleEndian.Uint64(raw[64:]) {
		return raw[ps : 2*ps]
	}
	return raw[:ps]
}

// usedBytes is the size of a bbolt file's pages in use.
func usedBytes(raw []byte) int {
	m := newerMeta(raw)
	return int(binary.LittleEndian.Uint64(m[56:])) * int(binary.LittleEndian.Uint32(m[24:]))
}

// flipRootTypeBit flips one bit of the page type of the root bucket's page,
// a data page every read goes through.
func flipRootTypeBit(raw []byte) {
	ps := int(binary.LittleEndian.Uint32(raw[24:]))
	root := int(binary.LittleEndian.Uint64(newerMeta(raw)[32:]))
	raw[root*ps+8] ^= 0x08
}

// damages are the ways a state file is broken in these tests, each with
// what the error must say.
var damages = []struct {
	name   string
	damage func(raw []byte) []byte
	want   string
}{
	{"empty", func([]byte) []byte { return nil }, "is empty"},
	// bbolt grows a file ahead of its use: cut half of the pages in use.
	{"truncated-half", func(raw []byte) []byte { return raw[:usedBytes(raw)/2] }, "is truncated"},
	{"bit-flip-data-page", func(raw []byte) []byte { flipRootTypeBit(raw); return raw }, "unexpected type"},
}

// writeDamaged writes a damaged copy of src to dst and returns its bytes.
func writeDamaged(t *testing.T, src, dst string, damage func([]byte) []byte) []byte {
	t.Helper()
	raw, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	out := damage(raw)
	if err := os.WriteFile(dst, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCoordinatorRefusesDamagedOrChangedState runs a 2-round job under
// secure aggregation with --backup, then restarts `tally coordinator` on
// copies of its state file that are empty, cut to half, or have a bit
// flipped in a data page, and on the intact file with secure_aggregation
// switched from he to none in job.yaml. Each time the coordinator must
// exit non-zero at once with an error naming the file and the problem,
// and leave the file as it was. Before, the empty file started a new job
// with a new key, the truncated one crashed inside bbolt, and the changed
// job printed the old result and exited 0. The --backup copy verifies.
func TestCoordinatorRefusesDamagedOrChangedState(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildTally(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir, job, runAll := stateJob(t, ctx, bin, "he")
	state := filepath.Join(dir, "state.db")
	backup := filepath.Join(dir, "state.backup.db")
	runAll(state, backup)
	var out bytes.Buffer
	if code := run([]string{"ledger", "verify", "--db", backup}, &out, &out); code != 0 {
		t.Fatalf("the coordinator's --backup copy does not verify: exit %d\n%s", code, out.String())
	}
	t.Log(strings.TrimSpace(out.String()))

	// restart runs the coordinator on stateFile and returns its exit code
	// and output; it must exit by itself well before the job's timeouts.
	restart := func(t *testing.T, stateFile string) (int, string) {
		t.Helper()
		rctx, rcancel := context.WithTimeout(ctx, 60*time.Second)
		defer rcancel()
		var out bytes.Buffer
		c := exec.CommandContext(rctx, bin, "coordinator", "--config", job, "--state", stateFile, "--metrics-addr", "", "--insecure-plaintext")
		c.Stdout, c.Stderr = &out, &out
		err := c.Run()
		if rctx.Err() != nil {
			t.Fatalf("the coordinator did not exit within 60 s (it accepted the file):\n%s", out.String())
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), out.String()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, out.String()
	}
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "damaged.db")
			before := writeDamaged(t, state, path, d.damage)
			code, msg := restart(t, path)
			if code != 1 || !strings.Contains(msg, path) || !strings.Contains(msg, d.want) {
				t.Errorf("coordinator on a state file %s: exit %d, want 1 with an error naming %s and %q:\n%s", d.name, code, path, d.want, msg)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
				t.Errorf("the coordinator modified the refused file (%d bytes before, %d after)", len(before), len(after))
			}
			t.Log(strings.TrimSpace(msg))
		})
	}
	t.Run("changed-job", func(t *testing.T) {
		y, err := os.ReadFile(job)
		if err != nil {
			t.Fatal(err)
		}
		changed := strings.Replace(string(y), "secure_aggregation: he", "secure_aggregation: none", 1)
		if changed == string(y) {
			t.Fatalf("job.yaml has no secure_aggregation line:\n%s", y)
		}
		if err := os.WriteFile(job, []byte(changed), 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(job, y, 0o644)
		before, _ := os.ReadFile(state)
		code, msg := restart(t, state)
		for _, w := range []string{state, `secure_aggregation: state file has "he", job file has "none"`, "--state"} {
			if code != 1 || !strings.Contains(msg, w) {
				t.Errorf("coordinator with a changed job file: exit %d, want 1 and %q in:\n%s", code, w, msg)
			}
		}
		if after, _ := os.ReadFile(state); !bytes.Equal(after, before) {
			t.Errorf("the coordinator modified the state file of the other job")
		}
		t.Log(strings.TrimSpace(msg))
	})

	// Recovery: the state file is lost; the --backup copy is put in its
	// place, rounds is raised from 2 to 3 in job.yaml (an operational
	// change) and the job resumes from the copy: round 3 runs, and the
	// ledger holds the receipts of the 3 rounds once each, the settlement
	// of rounds 1–2 the backup holds and the settlement of round 3, the
	// extension (3 clients each). This job runs
	// in the clear: under he, clients restarted after the job ended do not
	// form the committee again (they keep no key share), a limitation of
	// the client, not of the state file.
	dir, job, runAll = stateJob(t, ctx, bin, "none")
	state = filepath.Join(dir, "state.db")
	backup = filepath.Join(dir, "state.backup.db")
	runAll(state, backup)
	if err := os.WriteFile(state, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, msg := restart(t, state); code != 1 || !strings.Contains(msg, "is empty") {
		t.Fatalf("coordinator on the emptied state file: exit %d\n%s", code, msg)
	}
	cp, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(state, cp, 0o600); err != nil {
		t.Fatal(err)
	}
	y, _ := os.ReadFile(job)
	if err := os.WriteFile(job, []byte(strings.Replace(string(y), "rounds: 2", "rounds: 3", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := runAll(state, filepath.Join(dir, "second.backup.db")); !strings.Contains(got, "done after round 3") {
		t.Fatalf("the job resumed from the backup did not finish round 3:\n%s", got)
	}
	out.Reset()
	if code := run([]string{"ledger", "verify", "--db", state}, &out, &out); code != 0 || !strings.Contains(out.String(), "15 receipts over 3 rounds") {
		t.Errorf("after resuming from the backup: exit %d, want 15 receipts over 3 rounds\n%s", code, out.String())
	}
	t.Log(strings.TrimSpace(out.String()))
}

// stateJob writes a 3-client, 2-round breast-cancer job (secure
// aggregation he or none) and returns its folder, job file and a function
// that runs its coordinator on a state file, with --backup, and its three
// clients, and returns the coordinator's standard output. Clients keep
// their keys next to their data, so a second run resumes them.
func stateJob(t *testing.T, ctx context.Context, bin, secure string) (string, string, func(state, backup string) string) {
	t.Helper()
	dir := t.TempDir()
	addr := freePort(t)
	// Without a manifest (which would refuse secure_aggregation: none) and
	// over plaintext: what is tested here is the state file.
	if out, err := exec.CommandContext(ctx, bin, "data", "--dataset", "breast-cancer", "--clients", "3", "--rounds", "2", "--listen", addr, "--seed", "5", "--out", dir, "--insecure-plaintext").CombinedOutput(); err != nil {
		t.Fatalf("tally data: %v\n%s", err, out)
	}
	job := filepath.Join(dir, "job.yaml")
	if secure != "he" {
		y, err := os.ReadFile(job)
		if err != nil {
			t.Fatal(err)
		}
		patched := strings.Replace(string(y), "secure_aggregation: he", "secure_aggregation: "+secure, 1)
		if patched == string(y) {
			t.Fatalf("job.yaml has no secure_aggregation line:\n%s", y)
		}
		if err := os.WriteFile(job, []byte(patched), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, job, func(state, backup string) string {
		t.Helper()
		var stdout, logs bytes.Buffer
		coord := exec.CommandContext(ctx, bin, "coordinator", "--config", job, "--state", state, "--backup", backup, "--metrics-addr", "", "--insecure-plaintext")
		coord.Stdout, coord.Stderr = &stdout, &logs
		if err := coord.Start(); err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(filepath.Join(dir, "tokens.txt"))
		if err != nil {
			t.Fatal(err)
		}
		var clients []*exec.Cmd
		var outs []*bytes.Buffer
		for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
			f := strings.Fields(line)
			c := exec.CommandContext(ctx, bin, "client", "--join", addr, "--token", f[1], "--data", filepath.Join(dir, f[2]), "--insecure-plaintext", "--insecure-no-manifest")
			var out bytes.Buffer
			c.Stdout, c.Stderr = &out, &out
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
			clients, outs = append(clients, c), append(outs, &out)
		}
		err = coord.Wait()
		for _, c := range clients {
			_ = c.Wait()
		}
		if err != nil {
			for i, o := range outs {
				t.Logf("client %d:\n%s", i, o)
			}
			t.Fatalf("coordinator: %v\n%s", err, logs.String())
		}
		return stdout.String()
	}
}
