package coordinator

import (
	"errors"
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
