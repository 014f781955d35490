package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// labelsJob is a small two-client job on synthetic data in which class
// "diabetic" is x0 + x1/2 > 0: its model reaches an accuracy near 1, and
// near 0 when one side's labels are inverted.
type labelsJob struct {
	dir, addr, job string
	tokens         map[string]string
	ctx            context.Context
	cancel         context.CancelFunc
}

// writeLabelsCSV writes n rows of (glucose, bmi, label); label(healthy bool)
// gives the label field of a row.
func writeLabelsCSV(t *testing.T, path string, n int, seed uint64, label func(diabetic bool) string) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 2))
	var b strings.Builder
	b.WriteString("glucose,bmi,outcome\n")
	for range n {
		x0, x1 := rng.NormFloat64(), rng.NormFloat64()
		fmt.Fprintf(&b, "%.4f,%.4f,%s\n", x0, x1, label(x0+x1/2 > 0))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func names(healthy, diabetic string) func(bool) string {
	return func(d bool) string {
		if d {
			return diabetic
		}
		return healthy
	}
}

// newLabelsJob writes a job file with the given data.classes value and
// validation/test files; clients a and b may enrol with single-use tokens.
func newLabelsJob(t *testing.T, classes string) *labelsJob {
	t.Helper()
	// Every command of the job stops when the test ends, passed or not.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	j := &labelsJob{dir: t.TempDir(), addr: freePort(t), tokens: map[string]string{"a": "token-aaaa-1", "b": "token-bbbb-1"}, ctx: ctx, cancel: cancel}
	j.job = filepath.Join(j.dir, "job.yaml")
	// The coordinator's validation file numbers its classes as the job
	// file orders them (healthy = 0, diabetic = 1), as `tally data` writes
	// labels; its test file names them when the job does.
	writeLabelsCSV(t, filepath.Join(j.dir, "validation.csv"), 200, 91, names("0", "1"))
	if strings.HasPrefix(classes, "[") {
		writeLabelsCSV(t, filepath.Join(j.dir, "test.csv"), 200, 92, names("healthy", "diabetic"))
	} else {
		writeLabelsCSV(t, filepath.Join(j.dir, "test.csv"), 200, 92, names("0", "1"))
	}
	cfg := fmt.Sprintf(`id: labels
seed: 5
rounds: 3
train: {epochs: 2, batch_size: 16, learning_rate: 0.2}
data:
  features: 2
  classes: %s
  validation: {csv: validation.csv}
  test: {csv: test.csv}
clients:
  min: 2
  enrolment:
    - {id: a, token: %s}
    - {id: b, token: %s}
listen: %s
tick: 20ms
secure_aggregation: none
valuation: {mode: off}
`, classes, j.tokens["a"], j.tokens["b"], j.addr)
	if err := os.WriteFile(j.job, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return j
}

type runResult struct {
	err            error
	stdout, stderr string
}

// start runs a command of tally in this process and returns its result on
// the channel.
func (j *labelsJob) start(cmd func(context.Context, []string, io.Writer, io.Writer) error, args ...string) <-chan runResult {
	ch := make(chan runResult, 1)
	go func() {
		var out, errb bytes.Buffer
		err := cmd(j.ctx, args, &out, &errb)
		ch <- runResult{err, out.String(), errb.String()}
	}()
	return ch
}

// coordinator starts the job's coordinator; if it fails, the clients are
// stopped too.
func (j *labelsJob) coordinator() <-chan runResult {
	// Plaintext and no manifest: this job file is written by hand for the
	// label mapping, which is what is tested.
	ch := j.start(runCoordinator, "--config", j.job, "--metrics-addr", "", "--report", filepath.Join(j.dir, "report.json"), "--insecure-plaintext")
	out := make(chan runResult, 1)
	go func() {
		r := <-ch
		if r.err != nil {
			j.cancel()
		}
		out <- r
	}()
	return out
}

func (j *labelsJob) client(id, csv string) <-chan runResult {
	return j.start(runClient, "--join", j.addr, "--token", j.tokens[id], "--data", filepath.Join(j.dir, csv), "--insecure-plaintext", "--insecure-no-manifest")
}

func (j *labelsJob) testAccuracy(t *testing.T) float64 {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(j.dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		TestAccuracy float64 `json:"test_accuracy"`
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	return rep.TestAccuracy
}

// tail is the end of a command's log, for a failure message.
func tail(s string) string {
	if len(s) > 3000 {
		return "…" + s[len(s)-3000:]
	}
	return s
}

// TestClassesByNameAcrossFiles is issue 11's defect 6: one hospital writes
// its labels healthy/diabetic, which sort the other way round, the job
// file names the classes [healthy, diabetic], and the coordinator's
// validation file numbers them in the job's order. Mapped by name, every
// side agrees and the model is accurate; mapped alphabetically per file,
// that hospital's labels were inverted.
func TestClassesByNameAcrossFiles(t *testing.T) {
	j := newLabelsJob(t, "[healthy, diabetic]")
	// Client a names its labels; client b numbers them in the job's order.
	writeLabelsCSV(t, filepath.Join(j.dir, "a.csv"), 300, 1, names("healthy", "diabetic"))
	writeLabelsCSV(t, filepath.Join(j.dir, "b.csv"), 300, 2, names("0", "1"))
	coord := j.coordinator()
	ca, cb := j.client("a", "a.csv"), j.client("b", "b.csv")
	r := <-coord
	if r.err != nil {
		j.cancel()
		t.Fatalf("coordinator: %v\n%s", r.err, tail(r.stderr))
	}
	for _, c := range []<-chan runResult{ca, cb} {
		if r := <-c; r.err != nil {
			t.Errorf("client: %v\n%s", r.err, tail(r.stderr))
		}
	}
	t.Log(strings.TrimSpace(r.stdout))
	if acc := j.testAccuracy(t); acc < 0.85 {
		t.Fatalf("test accuracy %.3f, want ≥ 0.85: a side's labels are inverted", acc)
	}
}

// TestClientNamedLabelsInNumberedJob: a job that only counts its classes
// (classes: 2) gives no names to map "healthy" and "diabetic" to; the
// client must refuse its file, naming file, line and value, instead of
// numbering the names alphabetically (diabetic 0, healthy 1: the inverse
// of the validation file's numbering).
func TestClientNamedLabelsInNumberedJob(t *testing.T) {
	j := newLabelsJob(t, "2")
	writeLabelsCSV(t, filepath.Join(j.dir, "a.csv"), 300, 1, names("healthy", "diabetic"))
	writeLabelsCSV(t, filepath.Join(j.dir, "b.csv"), 300, 2, names("0", "1"))
	coord := j.coordinator()
	cb := j.client("b", "b.csv")
	ra := <-j.client("a", "a.csv")
	if ra.err == nil {
		rc := <-coord
		t.Fatalf("client a with labels healthy/diabetic in a job of classes 0, 1 ran:\n%s\ncoordinator: %s", ra.stdout, rc.stdout)
	}
	t.Logf("client a: %v", ra.err)
	want := filepath.Join(j.dir, "a.csv") + `:2: column "outcome" (2): `
	if !strings.Contains(ra.err.Error(), want) || !strings.Contains(ra.err.Error(), `got "healthy"`) && !strings.Contains(ra.err.Error(), `got "diabetic"`) {
		t.Errorf("client a's error does not name file, line, column and value (%s…):\n%v", want, ra.err)
	}
	// Its token unspent, client a joins with a file the job can use.
	writeLabelsCSV(t, filepath.Join(j.dir, "a2.csv"), 300, 1, names("0", "1"))
	ra2 := <-j.client("a", "a2.csv")
	rb, rc := <-cb, <-coord
	if ra2.err != nil || rb.err != nil || rc.err != nil {
		t.Fatalf("the job did not finish after client a fixed its file: a: %v, b: %v, coordinator: %v\n%s", ra2.err, rb.err, rc.err, tail(rc.stderr))
	}
}

// TestClientLabelsCheckedBeforeEnrolling: a client whose labels are 1 and
// 2 in a two-class job fails before it enrols, so its single-use token
// still admits it once its file is right.
func TestClientLabelsCheckedBeforeEnrolling(t *testing.T) {
	j := newLabelsJob(t, "2")
	writeLabelsCSV(t, filepath.Join(j.dir, "a.csv"), 300, 1, names("1", "2"))
	writeLabelsCSV(t, filepath.Join(j.dir, "b.csv"), 300, 2, names("0", "1"))
	coord := j.coordinator()
	ra := <-j.client("a", "a.csv")
	if ra.err == nil {
		j.cancel()
		t.Fatalf("client a with labels 1 and 2 in a two-class job ran:\n%s", ra.stdout)
	}
	t.Logf("client a: %v", ra.err)
	if !strings.Contains(ra.err.Error(), `got "2"`) || !strings.Contains(ra.err.Error(), "a.csv:") {
		t.Errorf("client a's error does not name its file and the label 2: %v", ra.err)
	}
	writeLabelsCSV(t, filepath.Join(j.dir, "a2.csv"), 300, 1, names("0", "1"))
	ca2, cb := j.client("a", "a2.csv"), j.client("b", "b.csv")
	ra2 := <-ca2
	if ra2.err != nil {
		j.cancel()
		t.Errorf("client a, its file fixed, could not join with its token (spent by the failed start?): %v", ra2.err)
	}
	rb, rc := <-cb, <-coord
	if ra2.err == nil && (rb.err != nil || rc.err != nil) {
		t.Fatalf("job did not finish: b: %v, coordinator: %v\n%s", rb.err, rc.err, tail(rc.stderr))
	}
}
