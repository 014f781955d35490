package extmodel

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"testing"
	"time"
)

// The test binary doubles as a misbehaving adapter: run with
// TALLY_FAKE_ADAPTER=MODE it speaks the protocol on stdin/stdout, a
// linear model of features×classes weights, and fails in the way MODE
// names. Tests start it through Options.Command, as tally would start
// python.

const fakeEnv = "TALLY_FAKE_ADAPTER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(fakeEnv); mode != "" {
		os.Exit(fakeAdapter(mode, os.Getenv("TALLY_FAKE_MARKER")))
	}
	os.Exit(m.Run())
}

// fakeCommand is the shell command that runs the fake adapter in mode.
// marker is a file the adapter creates when it starts, so that a mode can
// behave differently in its second process.
func fakeCommand(t testing.TB, mode string) string {
	t.Helper()
	marker := t.TempDir() + "/started"
	return fmt.Sprintf("%s=%s TALLY_FAKE_MARKER=%s %q -test.run=^$", fakeEnv, mode, marker, os.Args[0])
}

func fakeAdapter(mode, marker string) int {
	_, err := os.Stat(marker)
	second := err == nil
	os.WriteFile(marker, []byte("1"), 0o644)
	in := bufio.NewReader(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	yes, no := true, false
	var n int
	data := map[string]int{}
	for {
		m, err := readMessage(in)
		if err != nil {
			return 0
		}
		switch m.Op {
		case "hello":
			if mode == "garbage" {
				fmt.Fprintln(out, "Loading weights… done")
				out.Flush()
				continue
			}
			n = m.Features * m.Classes
			layout := []Tensor{{Name: "w", Shape: []int{m.Features, m.Classes}}}
			if mode == "relayout" && second {
				layout = []Tensor{{Name: "w", Shape: []int{m.Classes, m.Features}}}
			}
			init := make([]float64, n)
			for i := range init {
				init[i] = float64(i) / 100
			}
			writeMessage(out, header{OK: &yes, Protocol: ProtocolVersion, Name: "fake-" + mode, Layout: layout, NumParams: n,
				Payload: []Array{{Name: "params", DType: "f64", Shape: []int{n}}}}, map[string][]float64{"params": init}, nil)
		case "data":
			data[m.Data] = m.Rows
			writeMessage(out, header{OK: &yes}, nil, nil)
		case "forget":
			delete(data, m.Data)
			writeMessage(out, header{OK: &yes}, nil, nil)
		case "train":
			p := m.floats["params"]
			switch {
			case mode == "crash" || (mode == "crash-once" && !second) || (mode == "relayout" && !second):
				fmt.Fprintln(os.Stderr, "Traceback: RuntimeError: boom")
				return 3
			case mode == "hang":
				time.Sleep(time.Hour)
			case mode == "error":
				writeMessage(out, header{OK: &no, Error: "RuntimeError: CUDA out of memory"}, nil, nil)
				continue
			}
			u := make([]float64, len(p))
			for i := range u {
				u[i] = -0.5 * p[i]
			}
			switch mode {
			case "short":
				u = u[:len(u)-1]
			case "nan":
				u[2] = math.NaN()
			}
			writeMessage(out, header{OK: &yes, Samples: data[m.Data], Steps: 1, Metrics: &metrics{Loss: 1},
				Payload: []Array{{Name: "update", DType: "f64", Shape: []int{len(u)}}}}, map[string][]float64{"update": u}, nil)
		case "evaluate":
			p := m.floats["params"]
			loss, acc := make([]float64, m.Count), make([]float64, m.Count)
			g := make([]float64, len(p))
			for k := range m.Count {
				for i := range n {
					x := p[k*n+i]
					loss[k] += x * x
					g[k*n+i] = 2 * x
				}
				acc[k] = 0.5
			}
			h := header{OK: &yes, Loss: loss, Accuracy: acc}
			if m.Gradients {
				h.Payload = []Array{{Name: "gradients", DType: "f64", Shape: []int{len(g)}}}
			}
			writeMessage(out, h, map[string][]float64{"gradients": g}, nil)
		}
	}
}
