package engine

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/model"
)

var update = flag.Bool("update", false, "rewrite the golden files of the trace tests")

// sumSquares is a stand-in evaluator: the loss is the squared norm of the
// parameters, so every aggregate shows in the trace as a distinct number.
type sumSquares struct{}

func (sumSquares) Evaluate(p []float64, _ *dataset.Scaler) (model.Metrics, error) {
	var s float64
	for _, v := range p {
		s += v * v
	}
	return model.Metrics{Loss: s, Accuracy: 1 / (1 + s)}, nil
}

func meanForTest(updates [][]float64, weights []float64) ([]float64, error) {
	out := make([]float64, len(updates[0]))
	var total float64
	for i, u := range updates {
		for j, v := range u {
			out[j] += weights[i] * v
		}
		total += weights[i]
	}
	for j := range out {
		out[j] /= total
	}
	return out, nil
}

// traceJob is the job every trace starts from; a script changes it with
// `set` lines before its first event.
func traceJob(t *testing.T, sets map[string]string) Job {
	cfg := JobConfig{
		ID: "t", Seed: 7, Rounds: 2,
		Data:         DataConfig{Features: 2, Classes: 2, Validation: SourceConfig{CSV: "val.csv"}},
		RoundTimeout: Duration(5 * time.Second), Tick: Duration(time.Second),
		Scaling: ScalingConfig{Mode: "none"}, SecureAggregation: "none",
		Clients: ClientsConfig{Min: 2, WaitFor: 3, Liveness: Duration(100 * time.Second)},
	}
	for _, id := range []string{"c1", "c2", "c3", "c4"} {
		cfg.Clients.Enrolment = append(cfg.Clients.Enrolment, EnrolmentConfig{ID: id, Token: "token-" + id})
	}
	for k, v := range sets {
		n, _ := strconv.Atoi(v)
		switch k {
		case "rounds":
			cfg.Rounds = n
		case "min":
			cfg.Clients.Min = n
		case "wait_for":
			cfg.Clients.WaitFor = n
		case "fraction":
			cfg.Clients.Fraction, _ = strconv.ParseFloat(v, 64)
		case "on_round_failure":
			cfg.OnRoundFailure = v
		case "max_failed_rounds":
			cfg.MaxFailedRounds = n
		case "scaling":
			cfg.Scaling.Mode = v
		case "enrol_timeout":
			cfg.Clients.EnrolTimeout = Duration(time.Duration(n) * time.Second)
		default:
			t.Fatalf("unknown set %q", k)
		}
	}
	job, err := NewJob(cfg, ".")
	if err != nil {
		t.Fatal(err)
	}
	return job
}

func TestTraces(t *testing.T) {
	files, _ := filepath.Glob("testdata/trace/*.trace")
	if len(files) == 0 {
		t.Fatal("no trace scripts")
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".trace")
		t.Run(name, func(t *testing.T) {
			got := runTrace(t, f)
			golden := strings.TrimSuffix(f, ".trace") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("trace %s differs from %s:\n%s", f, golden, diffLines(string(want), got))
			}
		})
	}
}

func runTrace(t *testing.T, path string) string {
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var e *Engine
	sets := map[string]string{}
	var out strings.Builder
	sc := bufio.NewScanner(fh)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		f := strings.Fields(text)
		kv := map[string]string{}
		for _, a := range f[1:] {
			if k, v, ok := strings.Cut(a, "="); ok {
				kv[k] = v
			}
		}
		if f[0] == "set" {
			sets[f[1]] = f[2]
			continue
		}
		if e == nil {
			e = NewEngine(traceJob(t, sets), FedAvg{Fraction: 1, Min: 2, Mean: meanForTest}, sumSquares{}, []float64{1, -1})
			if v, ok := sets["fraction"]; ok {
				fr, _ := strconv.ParseFloat(v, 64)
				e.strategy = FedAvg{Fraction: fr, Min: e.job.Clients.Min, Mean: meanForTest}
			}
		}
		fmt.Fprintf(&out, "> %s\n", text)
		var evs []Event
		switch f[0] {
		case "join":
			n, _ := strconv.ParseInt(kv["samples"], 10, 64)
			evs = append(evs, EvJoin{Client: f[1], Samples: n})
		case "poll":
			evs = append(evs, EvPoll{Client: f[1]})
		case "leave":
			evs = append(evs, EvLeft{Client: f[1]})
		case "tick":
			n := 1
			if len(f) > 1 {
				n, _ = strconv.Atoi(f[1])
			}
			for i := 0; i < n; i++ {
				evs = append(evs, EvTick{})
			}
		case "submit":
			task := kv["task"]
			if task == "" && e.Task() != nil {
				task = e.Task().ID
			}
			n, _ := strconv.ParseInt(kv["samples"], 10, 64)
			var u []float64
			for _, s := range strings.Split(kv["update"], ",") {
				if s == "" {
					continue
				}
				v, err := strconv.ParseFloat(s, 64)
				if err != nil {
					t.Fatalf("%s:%d: %v", path, line, err)
				}
				u = append(u, v)
			}
			d := sha256.Sum256([]byte(kv["update"] + "|" + kv["salt"]))
			evs = append(evs, EvSubmit{Client: f[1], TaskID: task, Samples: n, Update: u, Digest: d})
		case "state":
			fmt.Fprintf(&out, "  state phase=%s round=%d global=%s\n", e.Phase(), e.Round(), fmtVec(e.Global()))
			continue
		default:
			t.Fatalf("%s:%d: unknown command %q", path, line, f[0])
		}
		for _, ev := range evs {
			for _, a := range e.Step(ev) {
				out.WriteString("  " + fmtAction(a) + "\n")
			}
		}
	}
	return out.String()
}

func fmtVec(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatFloat(x, 'g', 6, 64)
	}
	return "[" + strings.Join(s, " ") + "]"
}

func fmtAction(a Action) string {
	switch a := a.(type) {
	case ActPersist:
		var parts []string
		if a.Client != nil {
			parts = append(parts, fmt.Sprintf("client=%s samples=%d", a.Client.ID, a.Client.Samples))
		}
		if a.Round != nil {
			parts = append(parts, fmt.Sprintf("round=%d attempt=%d failed=%v contributors=%v", a.Round.Round, a.Round.Attempt, a.Round.Failed, a.Round.Contributors))
		}
		if a.Global != nil {
			parts = append(parts, "global="+fmtVec(a.Global))
		}
		if a.Scaler != nil {
			parts = append(parts, "scaler mean="+fmtVec(a.Scaler.Mean)+" std="+fmtVec(a.Scaler.Std))
		}
		return "persist " + strings.Join(parts, " ")
	case ActPublish:
		return fmt.Sprintf("publish %s task=%s to=%v length=%d deadline=%d", a.Task.Kind, a.Task.ID, a.Task.Selected, a.Task.Length, a.Task.Deadline)
	case ActReply:
		if a.Err != nil {
			return fmt.Sprintf("reply %s task=%s refused: %v", a.Client, a.TaskID, a.Err)
		}
		return fmt.Sprintf("reply %s task=%s accepted duplicate=%v", a.Client, a.TaskID, a.Duplicate)
	case ActRoundDone:
		r := a.Record
		if r.Failed {
			return fmt.Sprintf("round-failed round=%d attempt=%d reason=%q", r.Round, r.Attempt, r.Reason)
		}
		return fmt.Sprintf("round-done round=%d attempt=%d contributors=%v val_loss=%.6g val_accuracy=%.6g", r.Round, r.Attempt, r.Contributors, r.ValLoss, r.ValAccuracy)
	case ActJobDone:
		return fmt.Sprintf("job-done final_round=%d reason=%q", a.FinalRound, a.Reason)
	case ActLog:
		return fmt.Sprintf("log %s %v", a.Msg, a.Attrs)
	}
	return fmt.Sprintf("unknown action %T", a)
}

func diffLines(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < max(len(w), len(g)); i++ {
		var a, c string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			c = g[i]
		}
		if a != c {
			fmt.Fprintf(&b, "line %d:\n  want %s\n  got  %s\n", i+1, a, c)
		}
	}
	return b.String()
}

// TestSubmitRefusalLeavesStateUnchanged checks, beyond the traces, that a
// refused submission changes nothing the engine would later act on.
func TestSubmitRefusalLeavesStateUnchanged(t *testing.T) {
	e := NewEngine(traceJob(t, nil), FedAvg{Fraction: 1, Min: 2, Mean: meanForTest}, sumSquares{}, []float64{1, -1})
	for _, c := range []string{"c1", "c2", "c3"} {
		e.Step(EvJoin{Client: c, Samples: 10})
	}
	task := e.Task()
	if task == nil {
		t.Fatal("no task after three joins")
	}
	before := len(e.got)
	cases := []struct {
		name string
		ev   EvSubmit
		want error
	}{
		{"wrong-length", EvSubmit{Client: "c1", TaskID: task.ID, Samples: 10, Update: []float64{1, 2, 3}}, ErrWrongLength},
		{"wrong-round", EvSubmit{Client: "c1", TaskID: "t/train/r2/a1", Samples: 10, Update: []float64{1, 2}}, ErrNoTask},
		{"unknown-client", EvSubmit{Client: "zz", TaskID: task.ID, Samples: 10, Update: []float64{1, 2}}, ErrUnknownClient},
		{"not-finite", EvSubmit{Client: "c1", TaskID: task.ID, Samples: 10, Update: []float64{math.NaN(), 2}}, ErrBadUpdate},
		{"no-weight", EvSubmit{Client: "c1", TaskID: task.ID, Samples: 0, Update: []float64{1, 2}}, ErrBadUpdate},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			acts := e.Step(c.ev)
			if len(acts) != 1 {
				t.Fatalf("want one reply, got %d actions", len(acts))
			}
			r := acts[0].(ActReply)
			if !errors.Is(r.Err, c.want) {
				t.Fatalf("err = %v, want %v", r.Err, c.want)
			}
			if len(e.got) != before || e.Task() != task {
				t.Fatal("refused submission changed the round state")
			}
		})
	}
}
