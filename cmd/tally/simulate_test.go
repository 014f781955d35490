package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func simOpts(t *testing.T, args ...string) *simOptions {
	t.Helper()
	fs := newFlagSet("simulate")
	o := simFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	o.Quiet = true
	return o
}

// TestSimulateSameSeedSameMetrics runs the same simulation twice: the
// per-round metrics must be identical to the bit. (Under secure
// aggregation the decryption's flooding noise is fresh randomness, so only
// plaintext runs can be bit-identical; TestSecureMatchesPlain bounds the rest.)
func TestSimulateSameSeedSameMetrics(t *testing.T) {
	run := func() []byte {
		rep, err := simulate(context.Background(), simOpts(t, "--clients", "5", "--rounds", "4", "--seed", "11", "--corrupt", "4=free-rider:random", "--secure-aggregation", "none"), io.Discard, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(rep.Rounds)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b := run(), run()
	if !bytes.Equal(a, b) {
		t.Fatalf("same seed, different metrics:\n%s\n%s", a, b)
	}
	rep, err := simulate(context.Background(), simOpts(t, "--clients", "5", "--rounds", "4", "--seed", "12", "--secure-aggregation", "none"), io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := json.Marshal(rep.Rounds)
	if bytes.Equal(a, c) {
		t.Fatal("a different seed gave the same metrics: the seed is not used")
	}
}

// TestDemoAcceptance is `make demo`'s job: breast-cancer, 8 clients, 20
// rounds. The federated model must reach 0.95 and stay within 0.02 of the
// same model trained centrally on the union of the clients' data.
func TestDemoAcceptance(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "demo-report.json")
	var out bytes.Buffer
	code := run([]string{"simulate", "--dataset", "breast-cancer", "--clients", "8", "--rounds", "20", "--seed", "1", "--report", path}, &out, &out)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out.String())
	}
	for _, want := range []string{"round  20/20", "val_loss", "val_accuracy", "final test accuracy", "centralised test accuracy"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rep map[string]any
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"rounds", "test_accuracy", "centralised_test_accuracy", "clients", "seed", "secure_aggregation", "committee"} {
		if _, ok := rep[k]; !ok {
			t.Errorf("report lacks %q", k)
		}
	}
	rounds := rep["rounds"].([]any)
	if len(rounds) != 20 {
		t.Fatalf("%d rounds in the report, want 20", len(rounds))
	}
	for _, k := range []string{"round", "val_loss", "val_accuracy", "bytes_received"} {
		if _, ok := rounds[0].(map[string]any)[k]; !ok {
			t.Errorf("round entry lacks %q", k)
		}
	}
	if rep["secure_aggregation"] != "he" {
		t.Errorf("the demo runs with secure_aggregation %v, want he", rep["secure_aggregation"])
	}
	if c := rep["committee"].(map[string]any); c["size"].(float64) != 5 || c["threshold"].(float64) != 3 {
		t.Errorf("committee = %v, want size 5, threshold 3", c)
	}
	clients := rep["clients"].([]any)
	if len(clients) != 8 {
		t.Fatalf("%d clients in the report, want 8", len(clients))
	}
	for _, k := range []string{"id", "samples", "corruption"} {
		if _, ok := clients[0].(map[string]any)[k]; !ok {
			t.Errorf("client entry lacks %q", k)
		}
	}
	acc, central := rep["test_accuracy"].(float64), rep["centralised_test_accuracy"].(float64)
	t.Logf("test accuracy %.4f, centralised %.4f", acc, central)
	if acc < 0.95 {
		t.Errorf("test accuracy %.4f < 0.95", acc)
	}
	if math.Abs(acc-central) > 0.02 {
		t.Errorf("test accuracy %.4f is not within 0.02 of the centralised %.4f", acc, central)
	}
}

// TestSecureMatchesPlain: the demo under multiparty CKKS and in the clear,
// with the same seed, agree on every round's validation loss and accuracy
// within 1e-4; encryption changes who can see the updates, not the model.
func TestSecureMatchesPlain(t *testing.T) {
	reps := map[string]*simReport{}
	for _, mode := range []string{"he", "none"} {
		rep, err := simulate(context.Background(), simOpts(t, "--clients", "8", "--rounds", "20", "--seed", "1", "--secure-aggregation", mode, "--centralised=false"), io.Discard, io.Discard)
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		reps[mode] = rep
	}
	he, plain := reps["he"], reps["none"]
	if len(he.Rounds) != 20 || len(plain.Rounds) != 20 {
		t.Fatalf("rounds: he %d, none %d", len(he.Rounds), len(plain.Rounds))
	}
	var worst float64
	for i := range he.Rounds {
		dl := math.Abs(he.Rounds[i].ValLoss - plain.Rounds[i].ValLoss)
		da := math.Abs(he.Rounds[i].ValAccuracy - plain.Rounds[i].ValAccuracy)
		worst = max(worst, dl, da)
		if dl > 1e-4 || da > 1e-4 {
			t.Errorf("round %d: he loss %.8f acc %.6f, none loss %.8f acc %.6f", i+1, he.Rounds[i].ValLoss, he.Rounds[i].ValAccuracy, plain.Rounds[i].ValLoss, plain.Rounds[i].ValAccuracy)
		}
		if d := he.Rounds[i].Decryptions; len(d) == 0 || d[0].Purpose != "round" || d[0].Contributors != 8 {
			t.Errorf("round %d decryptions = %+v, want the round's aggregate of 8 clients first", i+1, d)
		}
		if he.Rounds[i].BytesReceived <= plain.Rounds[i].BytesReceived {
			t.Errorf("round %d: %d bytes under he, %d in the clear", i+1, he.Rounds[i].BytesReceived, plain.Rounds[i].BytesReceived)
		}
	}
	t.Logf("largest difference between he and none: %.3g; test accuracy he %.4f none %.4f", worst, he.TestAccuracy, plain.TestAccuracy)
	if he.TestAccuracy < 0.95 {
		t.Errorf("test accuracy under he %.4f < 0.95", he.TestAccuracy)
	}
}

// TestDigitsMLP: `tally simulate --dataset digits --model mlp --clients 10
// --rounds 30` reaches 0.93 test accuracy.
func TestDigitsMLP(t *testing.T) {
	rep, err := simulate(context.Background(), simOpts(t, "--dataset", "digits", "--model", "mlp", "--clients", "10", "--rounds", "30", "--centralised=false"), io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("digits mlp test accuracy %.4f", rep.TestAccuracy)
	if rep.TestAccuracy < 0.93 {
		t.Fatalf("test accuracy %.4f < 0.93", rep.TestAccuracy)
	}
}

func TestSimulateBadFlags(t *testing.T) {
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"bad-corrupt", []string{"simulate", "--corrupt", "3"}, 2, "want CLIENT=KIND"},
		{"corrupt-out-of-range", []string{"simulate", "--clients", "4", "--corrupt", "9=label-flip:0.5", "--rounds", "1"}, 1, "client 9 does not exist"},
		{"unknown-dataset", []string{"simulate", "--dataset", "iris"}, 1, "iris"},
		{"unknown-command", []string{"frobnicate"}, 2, "unknown command"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			if code := run(c.args, &out, &out); code != c.code {
				t.Fatalf("exit %d, want %d:\n%s", code, c.code, out.String())
			}
			if !strings.Contains(out.String(), c.want) {
				t.Fatalf("output lacks %q:\n%s", c.want, out.String())
			}
		})
	}
}

// TestClientMalformedCSV: a bad data file is reported with its name, line
// and column before the client contacts anyone.
func TestClientMalformedCSV(t *testing.T) {
	path := filepath.Join(t.TempDir(), "local.csv")
	if err := os.WriteFile(path, []byte("a,b,label\n1,2,0\n3,oops,1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if code := run([]string{"client", "--join", "127.0.0.1:1", "--token", "whatever", "--data", path}, &out, &out); code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out.String())
	}
	want := path + `:3: column "b" (1): expected a number, got "oops"`
	if !strings.Contains(out.String(), want) {
		t.Fatalf("output lacks %q:\n%s", want, out.String())
	}
}

func TestEveryCommandHasHelp(t *testing.T) {
	for _, c := range commands() {
		var out bytes.Buffer
		if code := run([]string{c.name, "--help"}, &out, &out); code != 0 {
			t.Errorf("%s --help: exit %d", c.name, code)
		}
		if !strings.Contains(out.String(), "Usage: tally "+c.name) {
			t.Errorf("%s --help does not explain usage:\n%s", c.name, out.String())
		}
	}
}
