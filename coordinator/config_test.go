package coordinator

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/internal/auth"
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
			if !errors.Is(err, engine.ErrConfig) {
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
		{"n=8/plain", 8, engine.ModePlain, "none", 1, "exact-shapley"},
		{"n=40/plain", 40, engine.ModePlain, "none", 1, "monte-carlo"},
		{"n=63/influence", 63, engine.ModeInfluence, "he", 1, "monte-carlo"},
		{"n=64/influence", 64, engine.ModeInfluence, "he", 1, engine.MethodInfluence},
		{"n=1000/influence", 1000, engine.ModeInfluence, "he", 1, engine.MethodInfluence},
		{"n=1000/fraction=0.05", 1000, engine.ModeInfluence, "he", 0.05, "monte-carlo"},
		// Groups of at least 3: 150 clients make 50 players, 300 make 100.
		{"n=150/groups", 150, engine.ModeGroups, "he", 1, "monte-carlo"},
		{"n=300/groups", 300, engine.ModeGroups, "he", 1, engine.MethodInfluence},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := engine.JobConfig{
				ID: "defaults", Data: engine.DataConfig{Features: 2, Classes: 2},
				Clients:           engine.ClientsConfig{Fraction: tc.fraction},
				SecureAggregation: tc.secure, Valuation: engine.ValuationConfig{Mode: tc.mode},
			}
			for i := range tc.clients {
				cfg.Clients.Enrolment = append(cfg.Clients.Enrolment, engine.EnrolmentConfig{ID: fmt.Sprintf("c%04d", i), Token: fmt.Sprintf("token-%04d", i)})
			}
			job, err := engine.NewJob(cfg, ".")
			if err != nil {
				t.Fatal(err)
			}
			if job.Valuation.Method != tc.want {
				t.Errorf("method = %q, want %q", job.Valuation.Method, tc.want)
			}
		})
	}
}

// TestLoadJobClassNames: data.classes names the classes in label order, or
// counts them; NewJob keeps the names and the count in step.
func TestLoadJobClassNames(t *testing.T) {
	job, err := LoadJob("testdata/config/classes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := job.Data.ClassNames; !slices.Equal(got, []string{"healthy", "diabetic"}) || job.Data.Classes != 2 {
		t.Errorf("classes = %q (%d), want [healthy diabetic] (2)", got, job.Data.Classes)
	}
	job, err = LoadJob("testdata/config/good.yaml") // classes: 2
	if err != nil {
		t.Fatal(err)
	}
	if got := job.Data.ClassNames; !slices.Equal(got, []string{"0", "1"}) || job.Data.Classes != 2 {
		t.Errorf("classes: 2 gave %q (%d), want [0 1] (2)", got, job.Data.Classes)
	}
	for _, tc := range []struct {
		name string
		data engine.DataConfig
		want string // "" for valid
	}{
		{"count", engine.DataConfig{Features: 1, Classes: 3}, ""},
		{"names", engine.DataConfig{Features: 1, ClassNames: engine.ClassNames{"b", "a"}}, ""},
		{"both", engine.DataConfig{Features: 1, Classes: 2, ClassNames: engine.ClassNames{"b", "a"}}, ""},
		{"disagree", engine.DataConfig{Features: 1, Classes: 3, ClassNames: engine.ClassNames{"b", "a"}}, "data.classes: names 2 classes, but the class count is 3"},
		{"one", engine.DataConfig{Features: 1, ClassNames: engine.ClassNames{"a"}}, "data.classes: must name at least 2 classes, got 1"},
		{"none", engine.DataConfig{Features: 1}, "data.classes: must be between 2 and 10000, got 0"},
		{"space", engine.DataConfig{Features: 1, ClassNames: engine.ClassNames{"a ", "b"}}, `data.classes[0]: "a " is empty or has leading or trailing spaces`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := engine.JobConfig{Data: tc.data, Clients: engine.ClientsConfig{Enrolment: []engine.EnrolmentConfig{{ID: "a"}}}, SecureAggregation: "none"}
			job, err := engine.NewJob(cfg, ".")
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if len(job.Data.ClassNames) != job.Data.Classes {
					t.Errorf("%d names for %d classes", len(job.Data.ClassNames), job.Data.Classes)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// TestClassNamesYAML: names are written as a list, numbered classes as
// their number, and both read back to the same names.
func TestClassNamesYAML(t *testing.T) {
	for _, tc := range []struct {
		names engine.ClassNames
		want  string
	}{
		{engine.ClassNames{"healthy", "diabetic"}, "[healthy, diabetic]\n"},
		{engine.NumberedClasses(3), "3\n"},
		{engine.ClassNames{"1", "0"}, "[\"1\", \"0\"]\n"},
	} {
		b, err := yaml.Marshal(tc.names)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tc.want {
			t.Errorf("%q marshals as %q, want %q", tc.names, b, tc.want)
		}
		var back engine.ClassNames
		if err := yaml.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(back, tc.names) {
			t.Errorf("%q read back as %q", tc.names, back)
		}
	}
}

// TestTokenHashAgrees: a job file that gives one client's token in the
// clear and another's as its SHA-256 must see that they are the same
// token. engine.NewJob hashes with its own copy of the function the
// service checks presented tokens with (internal/auth.TokenHash, which the
// engine cannot import); the two must agree.
func TestTokenHashAgrees(t *testing.T) {
	cfg := engine.JobConfig{}
	cfg.Clients.Enrolment = []engine.EnrolmentConfig{
		{ID: "c1", Token: "token-c1-long"},
		{ID: "c2", TokenSHA256: auth.TokenHash("token-c1-long")},
	}
	_, err := engine.NewJob(cfg, ".")
	if want := "clients.enrolment[1].token: repeats the token of clients.enrolment[0]"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("NewJob: %v, want an error containing %q", err, want)
	}
}
