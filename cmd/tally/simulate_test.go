package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tallyfl/tally/internal/longtest"
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
// rounds under secure aggregation with the default valuation, client 6
// flipping half its labels and client 7 a free rider sending random
// updates. Both must rank last; the report carries the contributions, the
// valuation and every decryption, and the ledger verifies.
//
// It is gated (make test-long, no race detector): under -race its 20 rounds
// of projection scalars, 48 a round decrypted by the committee, ran past
// 7 minutes on a quiet machine and were the largest part of cmd/tally's
// 57 minutes in CI (the 60-minute limit of `make test`); without the race
// detector it takes about a minute. Projection under -race is still run by
// TestEveryClientKeepsItsLastReceipts and TestAuditJobProjectionScalars.
func TestDemoAcceptance(t *testing.T) {
	longtest.Gate(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "demo-report.json")
	db := filepath.Join(dir, "demo.db")
	var out bytes.Buffer
	args := []string{"simulate", "--dataset", "breast-cancer", "--clients", "8", "--rounds", "20", "--seed", "1",
		"--corrupt", "6=label-flip:0.5", "--corrupt", "7=free-rider:random", "--db", db, "--receipts-dir", filepath.Join(dir, "receipts"), "--report", path}
	if code := run(args, &out, &out); code != 0 {
		t.Fatalf("exit %d:\n%s", code, out.String())
	}
	for _, want := range []string{"round  20/20", "val_loss", "val_accuracy", "final test accuracy", "centralised test accuracy", "contributions (projection mode, exact-shapley"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rep simReport
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	var generic map[string]any
	_ = json.Unmarshal(raw, &generic)
	for _, k := range []string{"rounds", "test_accuracy", "centralised_test_accuracy", "clients", "seed", "secure_aggregation", "committee", "contributions", "valuation", "decryptions"} {
		if _, ok := generic[k]; !ok {
			t.Errorf("report lacks %q", k)
		}
	}
	if len(rep.Rounds) != 20 || len(rep.Clients) != 8 || rep.SecureAggregation != "he" || rep.Committee == nil || rep.Committee.Size != 5 || rep.Committee.Threshold != 3 {
		t.Fatalf("report: %d rounds, %d clients, secure %q, committee %+v", len(rep.Rounds), len(rep.Clients), rep.SecureAggregation, rep.Committee)
	}
	if rep.Valuation.Mode != "projection" || rep.Valuation.Method != "exact-shapley" || rep.Valuation.UtilityEvaluations == 0 {
		t.Errorf("valuation = %+v", rep.Valuation)
	}
	if len(rep.Contributions) != 8 {
		t.Fatalf("%d contributions", len(rep.Contributions))
	}
	last := map[string]bool{rep.Contributions[6].Client: true, rep.Contributions[7].Client: true}
	if !last["client-6"] || !last["client-7"] {
		t.Errorf("the label flipper and the free rider do not rank last: %+v", rep.Contributions)
	}
	for i, c := range rep.Contributions {
		if c.Rank != i+1 {
			t.Errorf("contribution %d has rank %d", i, c.Rank)
		}
	}
	// Every decryption of fewer than k = 3 contributors is one of a
	// client's projection scalars (purpose influence), at most the 6 public
	// vectors breast-cancer's projection declares per client per round.
	perRound := map[[2]any]int{}
	for _, d := range rep.Decryptions {
		if d.Contributors >= 3 {
			continue
		}
		if d.Purpose != "influence" || d.Contributors != 1 {
			t.Errorf("round %d: a %s decryption of %d contributors", d.Round, d.Purpose, d.Contributors)
		}
		perRound[[2]any{d.Round, d.Purpose}]++
	}
	for k, n := range perRound {
		if n > 8*6 {
			t.Errorf("%v: %d influence decryptions for 8 clients and 6 vectors", k, n)
		}
	}
	t.Logf("test accuracy %.4f, centralised %.4f", rep.TestAccuracy, *rep.CentralisedTestAccuracy)
	// Every decryption is in its members' transcripts too: simulate
	// compares each member's persisted transcript with the coordinator's.
	if i := strings.Index(out.String(), "members' transcripts: "); i < 0 {
		t.Errorf("simulate did not check the members' transcripts:\n%s", out.String())
	} else {
		line, _, _ := strings.Cut(out.String()[i:], "\n")
		t.Log(line)
	}
	out.Reset()
	if code := run([]string{"ledger", "verify", "--db", db}, &out, &out); code != 0 {
		t.Fatalf("ledger verify: exit %d\n%s", code, out.String())
	}
	// Every decryption of the demo is in the coordinator's transcript and
	// in the receipts: ledger verify checks both and counts them.
	m := regexp.MustCompile(`decryption transcript of job \S+ verifies: (\d+) entries \((\d+) signed by every participant, (\d+) by none\).*the receipts list (\d+) of them`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("ledger verify did not check a decryption transcript:\n%s", out.String())
	}
	if m[1] != m[4] || m[1] == "0" {
		t.Errorf("the transcript has %s entries, the receipts list %s:\n%s", m[1], m[4], out.String())
	}
	t.Logf("ledger verify: %s", strings.TrimSpace(out.String()))
}

// TestSecureMatchesPlain: the demo under multiparty CKKS and in the clear,
// with the same seed, agree on every round's validation loss and accuracy
// within 1e-4; encryption changes who can see the updates, not the model.
// loadProofTimeout is the round timeout of the tests that compare a job
// under he with the same job in the clear. The default minute closes a
// round with the updates received, and on a loaded machine under -race a
// round under he took 66–143 s (three busy loops beside the test): a round
// closed with 8 of 10 clients and a valuation whose decryptions timed out,
// so the comparison failed for a reason that was not the encryption's.
const loadProofTimeout = "30m"

// modelOnlyMode is the valuation mode of the tests about the trained model
// rather than the values: influence under he, one scalar per client a
// round, where the default projection decrypts 6 (breast-cancer) to 9
// (digits) and a batch of them took a member ~60 s under -race on a loaded
// machine. TestDemoAcceptance and the projection tests keep the default.
func modelOnlyMode(secure string) string {
	if secure == "he" {
		return "influence"
	}
	return "plain"
}

func TestSecureMatchesPlain(t *testing.T) {
	reps := map[string]*simReport{}
	for _, mode := range []string{"he", "none"} {
		// Valued by leave-one-out: the comparison is of the trained
		// models, and exact Shapley in the clear evaluates 2^8 coalition
		// models a round (116 s under -race with it, 108 s with loo).
		rep, err := simulate(context.Background(), simOpts(t, "--clients", "8", "--rounds", "20", "--seed", "1", "--secure-aggregation", mode, "--valuation-mode", modelOnlyMode(mode), "--valuation-method", "loo", "--centralised="+strconv.FormatBool(mode == "he"), "--round-timeout", loadProofTimeout), io.Discard, io.Discard)
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
	t.Logf("largest difference between he and none: %.3g; test accuracy he %.4f none %.4f, centralised %.4f", worst, he.TestAccuracy, plain.TestAccuracy, *he.CentralisedTestAccuracy)
	// Without corrupted clients the federated model must also match the
	// same model trained centrally on the union of the clients' data.
	if he.TestAccuracy < 0.95 {
		t.Errorf("test accuracy under he %.4f < 0.95", he.TestAccuracy)
	}
	if d := math.Abs(he.TestAccuracy - *he.CentralisedTestAccuracy); d > 0.02 {
		t.Errorf("test accuracy %.4f is %.4f away from the centralised %.4f", he.TestAccuracy, d, *he.CentralisedTestAccuracy)
	}
}

// TestSecureMatchesPlainDigits is issue 11, defect 1, end to end: on
// digits, pixels that are zero in every training row read a standard
// deviation of ~1e-5 from the aggregation noise under he, and the rare
// validation and test pixels where they are not zero were multiplied by
// ~1e5 (validation loss 66–2128 against 0.18, while accuracy looked
// normal). With the noise floor, he and none must agree on every round's
// validation metrics and on the test loss. The flooding noise is fresh in
// every run, so whether the defect shows varies from run to run; two seeds
// of 2 rounds each are run (both failed at 20 rounds on main, and one of
// two runs of this test failed there, on seed 1 from round 1).
func TestSecureMatchesPlainDigits(t *testing.T) {
	for _, seed := range []string{"1", "4"} {
		reps := map[string]*simReport{}
		logs := map[string]*bytes.Buffer{}
		for _, mode := range []string{"he", "none"} {
			o := simOpts(t, "--dataset", "digits", "--model", "mlp", "--clients", "10", "--partition", "dirichlet", "--alpha", "0.5", "--rounds", "2", "--seed", seed, "--secure-aggregation", mode, "--valuation-mode", modelOnlyMode(mode), "--valuation-method", "loo", "--centralised=false", "--round-timeout", loadProofTimeout)
			o.Quiet = false
			logs[mode] = &bytes.Buffer{}
			rep, err := simulate(context.Background(), o, logs[mode], logs[mode])
			if err != nil {
				t.Fatalf("seed %s, %s: %v\n%s", seed, mode, err, logs[mode])
			}
			reps[mode] = rep
		}
		defer func() {
			if t.Failed() {
				t.Logf("seed %s under he:\n%s", seed, logs["he"])
			}
		}()
		he, plain := reps["he"], reps["none"]
		if len(he.Rounds) != 2 || len(plain.Rounds) != 2 {
			t.Fatalf("seed %s: rounds: he %d, none %d", seed, len(he.Rounds), len(plain.Rounds))
		}
		for i := range he.Rounds {
			h, p := he.Rounds[i], plain.Rounds[i]
			if h.Contributors != 10 || p.Contributors != 10 {
				t.Errorf("seed %s round %d: %d contributors under he, %d under none, want 10 each", seed, i+1, h.Contributors, p.Contributors)
			}
			if h.ValuationError != "" {
				t.Errorf("seed %s round %d: valuation under he failed: %s", seed, i+1, h.ValuationError)
			}
			if math.Abs(h.ValLoss-p.ValLoss) > 1e-3*p.ValLoss || math.Abs(h.ValAccuracy-p.ValAccuracy) > 1e-3 {
				t.Errorf("seed %s round %d: he val loss %.6g acc %.4f, none val loss %.6g acc %.4f", seed, i+1, h.ValLoss, h.ValAccuracy, p.ValLoss, p.ValAccuracy)
			}
		}
		if math.Abs(he.TestLoss-plain.TestLoss) > 1e-3*plain.TestLoss {
			t.Errorf("seed %s: test loss %.6g under he, %.6g under none", seed, he.TestLoss, plain.TestLoss)
		}
	}
}

// TestDigitsMLP: `tally simulate --dataset digits --model mlp --clients 10
// --rounds 30` reaches 0.93 test accuracy. The valuation is leave-one-out
// in influence mode (modelOnlyMode):
// this test is about the model (measured under -race: 210 s with the
// default exact Shapley, 198 s with loo; the rest is CKKS and training).
func TestDigitsMLP(t *testing.T) {
	rep, err := simulate(context.Background(), simOpts(t, "--dataset", "digits", "--model", "mlp", "--clients", "10", "--rounds", "30", "--valuation-mode", modelOnlyMode("he"), "--valuation-method", "loo", "--centralised=false"), io.Discard, io.Discard)
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
		{"more-clients-than-rows", []string{"simulate", "--clients", "1000"}, 1, "341 rows cannot give 1000 clients 1 row(s) each; use --dataset digits (1079 training rows) or wsn (11348 training rows)"},
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

// TestQuietPrintsSummary: --quiet prints the summary and nothing else.
func TestQuietPrintsSummary(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"simulate", "--clients", "4", "--rounds", "2", "--secure-aggregation", "none", "--quiet", "--centralised=false"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "final test accuracy ") {
		t.Errorf("--quiet printed %q, want the one summary line", out.String())
	}
}

// TestSimulateMinGroupSizeBelowFloor: `tally simulate --min-group-size 2`
// under he used to wait for clients that had refused the job (their floor
// is k ≥ 3), round after round, until interrupted. It must fail at once,
// naming the flag and the floor.
func TestSimulateMinGroupSizeBelowFloor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := simulate(ctx, simOpts(t, "--clients", "4", "--rounds", "2", "--min-group-size", "2"), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--min-group-size 2") || !strings.Contains(err.Error(), "at least 3") {
		t.Fatalf("err = %v, want a refusal naming --min-group-size 2 and the floor 3", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("simulate ran until the test's deadline: %v", err)
	}
}
