package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// crashJob writes a 3-client breast-cancer job under dir and returns the
// job file and the client commands' arguments.
func crashJob(t *testing.T, bin, dir, addr string) (string, [][]string) {
	t.Helper()
	if out, err := exec.Command(bin, "data", "--dataset", "breast-cancer", "--clients", "3", "--rounds", "10", "--listen", addr, "--seed", "7", "--out", dir).CombinedOutput(); err != nil {
		t.Fatalf("tally data: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "tokens.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var clients [][]string
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		f := strings.Fields(line)
		clients = append(clients, []string{"client", "--join", addr, "--token", f[1], "--data", filepath.Join(dir, f[2])})
	}
	return filepath.Join(dir, "job.yaml"), clients
}

type coordReport struct {
	FinalModel []float64 `json:"final_model"`
	Rounds     []struct {
		Round  int  `json:"round"`
		Failed bool `json:"failed"`
	} `json:"rounds"`
}

// runJob runs a coordinator and its clients; kill > 0 SIGKILLs the
// coordinator that many times at random moments and restarts it.
func runJob(t *testing.T, bin string, kill int, seed uint64) (coordReport, string) {
	t.Helper()
	dir := t.TempDir()
	addr := freePort(t)
	job, clientArgs := crashJob(t, bin, dir, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var clients []*exec.Cmd
	var outs []*bytes.Buffer
	for _, a := range clientArgs {
		var out bytes.Buffer
		c := exec.CommandContext(ctx, bin, a...)
		c.Stdout, c.Stderr = &out, &out
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		clients, outs = append(clients, c), append(outs, &out)
	}
	report := filepath.Join(dir, "report.json")
	state := filepath.Join(dir, "state.db")
	rng := rand.New(rand.NewPCG(seed, 1))
	var logs bytes.Buffer
	start := func() *exec.Cmd {
		c := exec.CommandContext(ctx, bin, "coordinator", "--config", job, "--state", state, "--report", report)
		c.Stdout, c.Stderr = &logs, &logs
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		return c
	}
	began := time.Now()
	coord := start()
	for i := 0; i < kill; i++ {
		// A random moment within the first seconds of this incarnation:
		// enrolment, key generation, a round, a decryption or a write.
		time.Sleep(time.Duration(300+rng.IntN(1500)) * time.Millisecond)
		if err := coord.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = coord.Wait()
		t.Logf("coordinator killed (%d of %d) at %.1fs", i+1, kill, time.Since(began).Seconds())
		coord = start()
	}
	if err := coord.Wait(); err != nil {
		for i, o := range outs {
			t.Logf("client %d's output:\n%s", i, o)
		}
		t.Fatalf("coordinator: %v\n%s", err, logs.String())
	}
	t.Logf("job with %d kills finished in %.1fs", kill, time.Since(began).Seconds())
	for i, c := range clients {
		if err := c.Wait(); err != nil {
			t.Errorf("client %d: %v\n%s", i, err, outs[i])
		}
	}
	raw, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("%v\n%s", err, logs.String())
	}
	var rep coordReport
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	return rep, state
}

// TestCoordinatorCrashes: a 10-round job under secure aggregation whose
// coordinator is killed with SIGKILL five times and restarted completes,
// with the model of an uninterrupted run and a ledger that verifies and
// holds exactly one set of receipts per round.
func TestCoordinatorCrashes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs processes for a minute")
	}
	bin := buildTally(t)
	clean, _ := runJob(t, bin, 0, 1)
	crashed, state := runJob(t, bin, 5, 2)
	if len(clean.FinalModel) == 0 || len(clean.FinalModel) != len(crashed.FinalModel) {
		t.Fatalf("final models of %d and %d parameters", len(clean.FinalModel), len(crashed.FinalModel))
	}
	var worst float64
	for i := range clean.FinalModel {
		worst = max(worst, math.Abs(clean.FinalModel[i]-crashed.FinalModel[i]))
	}
	t.Logf("largest parameter difference after 5 crashes: %.3g", worst)
	if worst > 1e-4 {
		t.Errorf("the crashed run's model differs from the uninterrupted one by %g", worst)
	}
	completed := map[int]int{}
	for _, r := range crashed.Rounds {
		if !r.Failed {
			completed[r.Round]++
		}
	}
	for r := 1; r <= 10; r++ {
		if completed[r] != 1 {
			t.Errorf("round %d completed %d times, want exactly once", r, completed[r])
		}
	}
	var out bytes.Buffer
	if code := run([]string{"ledger", "verify", "--db", state}, &out, &out); code != 0 {
		t.Fatalf("ledger verify: exit %d\n%s", code, out.String())
	}
	out.Reset()
	if code := run([]string{"payouts", "--db", state, "--format", "json"}, &out, &out); code != 0 {
		t.Fatalf("payouts: exit %d\n%s", code, out.String())
	}
	var rows []struct {
		Round  int    `json:"round"`
		Client string `json:"client"`
		Kind   string `json:"kind"`
		From   int    `json:"from"`
	}
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
		t.Fatal(err)
	}
	per := map[int]map[string]int{}
	settled := map[string]int{}
	for _, r := range rows {
		if r.Kind == "settlement" {
			// The job's one settlement, of rounds 1–10, exactly once per
			// client however often the coordinator was killed.
			if r.From != 1 || r.Round != 10 {
				t.Errorf("settlement of rounds %d–%d for %s, want 1–10", r.From, r.Round, r.Client)
			}
			settled[r.Client]++
			continue
		}
		if per[r.Round] == nil {
			per[r.Round] = map[string]int{}
		}
		per[r.Round][r.Client]++
	}
	for r := 1; r <= 10; r++ {
		if len(per[r]) != 3 {
			t.Errorf("round %d has receipts for %d clients, want 3", r, len(per[r]))
		}
		for c, n := range per[r] {
			if n != 1 {
				t.Errorf("round %d client %s has %d receipts", r, c, n)
			}
		}
	}
	if len(settled) != 3 {
		t.Errorf("settlement receipts for %d clients, want 3: %v", len(settled), settled)
	}
	for c, n := range settled {
		if n != 1 {
			t.Errorf("client %s has %d settlement receipts, want 1", c, n)
		}
	}
}
