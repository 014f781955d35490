package coordinator

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadJobBadFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/config/*.bad.yaml")
	if len(files) == 0 {
		t.Fatal("no bad configs")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			want, err := os.ReadFile(strings.TrimSuffix(f, ".yaml") + ".err")
			if err != nil {
				t.Fatal(err)
			}
			_, err = LoadJob(f)
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrConfig) {
				t.Errorf("error does not wrap ErrConfig: %v", err)
			}
			if got := err.Error(); got != strings.TrimSpace(string(want)) {
				t.Errorf("error:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestLoadJobDefaults(t *testing.T) {
	job, err := LoadJob("testdata/config/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if job.Model.Kind != "mlp" || len(job.Model.Hidden) != 1 || job.Model.Hidden[0] != 8 {
		t.Errorf("model = %+v", job.Model)
	}
	if job.Clients.WaitFor != 2 || job.Clients.Fraction != 1 || job.Scaling.Mode != "federated" {
		t.Errorf("defaults not filled: %+v %+v", job.Clients, job.Scaling)
	}
	if got := job.Ticks(job.RoundTimeout); got != 100 {
		t.Errorf("10s at a 100ms tick = %d ticks, want 100", got)
	}
	if time.Duration(job.Tick) != 100*time.Millisecond {
		t.Errorf("tick = %v", time.Duration(job.Tick))
	}
	if job.Dir != "testdata/config" {
		t.Errorf("dir = %q", job.Dir)
	}
}

func TestValuationMethodDefault(t *testing.T) {
	for _, tc := range []struct {
		name         string
		clients      int
		mode, secure string
		fraction     float64
		want         string
	}{
		{"n=8/plain", 8, ModePlain, "none", 1, "exact-shapley"},
		{"n=40/plain", 40, ModePlain, "none", 1, "monte-carlo"},
		{"n=63/influence", 63, ModeInfluence, "he", 1, "monte-carlo"},
		{"n=64/influence", 64, ModeInfluence, "he", 1, MethodInfluence},
		{"n=1000/influence", 1000, ModeInfluence, "he", 1, MethodInfluence},
		{"n=1000/fraction=0.05", 1000, ModeInfluence, "he", 0.05, "monte-carlo"},
		// Groups of at least 3: 150 clients make 50 players, 300 make 100.
		{"n=150/groups", 150, ModeGroups, "he", 1, "monte-carlo"},
		{"n=300/groups", 300, ModeGroups, "he", 1, MethodInfluence},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := JobConfig{
				ID: "defaults", Data: DataConfig{Features: 2, Classes: 2},
				Clients:           ClientsConfig{Fraction: tc.fraction},
				SecureAggregation: tc.secure, Valuation: ValuationConfig{Mode: tc.mode},
			}
			for i := range tc.clients {
				cfg.Clients.Enrolment = append(cfg.Clients.Enrolment, EnrolmentConfig{ID: fmt.Sprintf("c%04d", i), Token: fmt.Sprintf("token-%04d", i)})
			}
			job, err := NewJob(cfg, ".")
			if err != nil {
				t.Fatal(err)
			}
			if job.Valuation.Method != tc.want {
				t.Errorf("method = %q, want %q", job.Valuation.Method, tc.want)
			}
		})
	}
}
