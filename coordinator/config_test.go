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
		data DataConfig
		want string // "" for valid
	}{
		{"count", DataConfig{Features: 1, Classes: 3}, ""},
		{"names", DataConfig{Features: 1, ClassNames: ClassNames{"b", "a"}}, ""},
		{"both", DataConfig{Features: 1, Classes: 2, ClassNames: ClassNames{"b", "a"}}, ""},
		{"disagree", DataConfig{Features: 1, Classes: 3, ClassNames: ClassNames{"b", "a"}}, "data.classes: names 2 classes, but the class count is 3"},
		{"one", DataConfig{Features: 1, ClassNames: ClassNames{"a"}}, "data.classes: must name at least 2 classes, got 1"},
		{"none", DataConfig{Features: 1}, "data.classes: must be between 2 and 10000, got 0"},
		{"space", DataConfig{Features: 1, ClassNames: ClassNames{"a ", "b"}}, `data.classes[0]: "a " is empty or has leading or trailing spaces`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := JobConfig{Data: tc.data, Clients: ClientsConfig{Enrolment: []EnrolmentConfig{{ID: "a"}}}, SecureAggregation: "none"}
			job, err := NewJob(cfg, ".")
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
		names ClassNames
		want  string
	}{
		{ClassNames{"healthy", "diabetic"}, "[healthy, diabetic]\n"},
		{NumberedClasses(3), "3\n"},
		{ClassNames{"1", "0"}, "[\"1\", \"0\"]\n"},
	} {
		b, err := yaml.Marshal(tc.names)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tc.want {
			t.Errorf("%q marshals as %q, want %q", tc.names, b, tc.want)
		}
		var back ClassNames
		if err := yaml.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(back, tc.names) {
			t.Errorf("%q read back as %q", tc.names, back)
		}
	}
}
