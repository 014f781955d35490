package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tallyfl/tally/extmodel"
)

// pythonWith finds an interpreter that imports modules. Without one the
// test is skipped, except on CI (CI set), where a missing python3-torch
// is a failure: .ci/run installs it, and the example must not stop being
// tested without anyone noticing.
func pythonWith(t *testing.T, modules ...string) string {
	t.Helper()
	py, err := extmodel.FindPython(modules...)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set and %v", err)
		}
		t.Skip(err)
	}
	return py
}

func repoPath(rel string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", rel)
}

// TestPyTorchExample is the README's PyTorch recipe, shortened: tally data
// writes digits shards and a job whose model is the PyTorch CNN; the
// coordinator (evaluating with the CNN) and three clients (training with
// it, --trainer) run as separate processes under he; the job ends with a
// test accuracy, every client's receipts, contributions, and a ledger that
// verifies.
func TestPyTorchExample(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary and PyTorch")
	}
	py := pythonWith(t, "torch", "numpy")
	cnn := py + " " + repoPath("examples/pytorch/digits_cnn.py")
	bin := buildTally(t)
	dir := t.TempDir()
	addr := freePort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const rounds = "3"
	if out, err := exec.CommandContext(ctx, bin, "data", "--dataset", "digits", "--clients", "3", "--rounds", rounds, "--listen", addr,
		"--model-command", cnn, "--scaling", "none", "--out", dir).CombinedOutput(); err != nil {
		t.Fatalf("tally data: %v\n%s", err, out)
	}
	report := filepath.Join(dir, "report.json")
	var coordOut, coordErr bytes.Buffer
	coord := exec.CommandContext(ctx, bin, "coordinator", "--config", filepath.Join(dir, "job.yaml"), "--metrics-addr", "", "--report", report)
	coord.Stdout, coord.Stderr = &coordOut, &coordErr
	if err := coord.Start(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "tokens.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var clients []*exec.Cmd
	var outs []*bytes.Buffer
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text()) // id token file
		var out bytes.Buffer
		c := exec.CommandContext(ctx, bin, "client", "--join", addr, "--token", fields[1], "--data", filepath.Join(dir, fields[2]), "--trainer", cnn)
		c.Stdout, c.Stderr = &out, &out
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		clients, outs = append(clients, c), append(outs, &out)
	}
	for i, c := range clients {
		if err := c.Wait(); err != nil {
			t.Errorf("client %d: %v\n%s", i, err, outs[i])
		}
		if !strings.Contains(outs[i].String(), "job finished; "+rounds+" model updates submitted") {
			t.Errorf("client %d did not report %s updates:\n%s", i, rounds, outs[i])
		}
	}
	if err := coord.Wait(); err != nil {
		t.Fatalf("coordinator: %v\n%s\n%s", err, coordOut.String(), coordErr.String())
	}
	if !strings.Contains(coordOut.String(), "done after round "+rounds+": test accuracy") {
		t.Fatalf("coordinator did not finish the job:\n%s\n%s", coordOut.String(), coordErr.String())
	}
	if !strings.Contains(coordErr.String(), "external model evaluator started") {
		t.Errorf("the coordinator did not evaluate with the external model:\n%s", coordErr.String())
	}
	raw, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		TestAccuracy  float64 `json:"test_accuracy"`
		Contributions []struct {
			Client string  `json:"client"`
			Value  float64 `json:"value"`
			Rounds int     `json:"rounds"`
		} `json:"contributions"`
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	// Three rounds of one epoch take the CNN from chance (0.1) to ≈ 0.6;
	// 0.3 fails a model that did not learn.
	if rep.TestAccuracy < 0.3 {
		t.Errorf("test accuracy %.3f after %s rounds: the CNN did not learn", rep.TestAccuracy, rounds)
	}
	if len(rep.Contributions) != 3 {
		t.Errorf("%d contributions, want 3: %s", len(rep.Contributions), raw)
	}
	for _, c := range rep.Contributions {
		if c.Rounds != 3 || c.Value == 0 {
			t.Errorf("contribution of %s: %d rounds, value %v; want 3 rounds and a value", c.Client, c.Rounds, c.Value)
		}
	}
	var out bytes.Buffer
	if code := run([]string{"ledger", "verify", "--db", filepath.Join(dir, "digits-job.db")}, &out, &out); code != 0 {
		t.Fatalf("ledger verify: exit %d\n%s", code, out.String())
	}
	t.Logf("%s%s", coordOut.String(), out.String())
}
