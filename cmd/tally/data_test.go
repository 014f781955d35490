package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/tallyfl/tally/coordinator"
	"github.com/tallyfl/tally/engine"
)

// zeroLine matches a job-file line whose value is a zero ("", 0s, null, 0,
// false, [] or {}): such a line reads like a setting but means "default".
var zeroLine = regexp.MustCompile(`(?m)^\s*[a-z_]+: (""|0s|null|0|false|\[\]|\{\})\s*$`)

// checkJobFile loads dir/job.yaml and checks it holds no zero field and
// loads back to the job its config literal makes.
func checkJobFile(t *testing.T, dir string) engine.Job {
	t.Helper()
	path := filepath.Join(dir, "job.yaml")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := zeroLine.FindAllString(string(raw), -1); len(m) > 0 {
		t.Errorf("job.yaml holds zero values that read like settings: %q\n%s", m, raw)
	}
	job, err := coordinator.LoadJob(path)
	if err != nil {
		t.Fatalf("job.yaml does not load: %v\n%s", err, raw)
	}
	return job
}

// TestJobYAMLRoundTrip: the template written for a config loads back to
// the job the config makes, with only its set fields written.
func TestJobYAMLRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "v.csv"), []byte("a,label\n1,0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := engine.JobConfig{
		ID: "rt", Seed: 9, Rounds: 4,
		Data: engine.DataConfig{Features: 3, ClassNames: engine.ClassNames{"healthy", "diabetic"},
			Validation: engine.SourceConfig{CSV: "v.csv", Label: "outcome"}},
		Clients: engine.ClientsConfig{Min: 1, Enrolment: []engine.EnrolmentConfig{{ID: "a"}, {ID: "b"}}},
		Listen:  "127.0.0.1:7171", SecureAggregation: "none",
	}
	y, err := jobYAML(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{`secure_aggregation: ""`, "tick: 0s", "he_params: null"} {
		if bytes.Contains(y, []byte(bad)) {
			t.Errorf("template holds %q:\n%s", bad, y)
		}
	}
	path := filepath.Join(dir, "job.yaml")
	if err := os.WriteFile(path, y, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := coordinator.LoadJob(path)
	if err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
	want, err := engine.NewJob(cfg, dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.JobConfig, want.JobConfig) {
		t.Errorf("job file loads back as\n%+v\nwant\n%+v\nfile:\n%s", got.JobConfig, want.JobConfig, y)
	}
	checkJobFile(t, dir)
}

// TestDataEmbeddedTemplate: `tally data` writes only meaningful fields,
// and its job loads.
func TestDataEmbeddedTemplate(t *testing.T) {
	dir := t.TempDir()
	if err := runData(t.Context(), []string{"--out", dir, "--clients", "3"}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	job := checkJobFile(t, dir)
	if job.Data.Features != 30 || job.Data.Classes != 2 || job.SecureAggregation != "he" {
		t.Errorf("features %d classes %d secure %q", job.Data.Features, job.Data.Classes, job.SecureAggregation)
	}
}

// TestDataCSV: `tally data --csv` writes a job for a hospital's own file:
// its feature count, its label column, its class names sorted (and
// printed) or in the order of --classes, split files or given ones.
func TestDataCSV(t *testing.T) {
	src := t.TempDir()
	csv := filepath.Join(src, "hospital.csv")
	writeLabelsCSV(t, csv, 120, 3, names("healthy", "diabetic"))
	// The label column first, by name: the feature count must not include it.
	val := filepath.Join(src, "val.csv")
	if err := os.WriteFile(val, []byte("outcome,glucose,bmi\nhealthy,1,2\ndiabetic,3,4\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("sorted/split", func(t *testing.T) {
		dir := t.TempDir()
		var out bytes.Buffer
		if err := runData(t.Context(), []string{"--csv", csv, "--out", dir}, &out, io.Discard); err != nil {
			t.Fatal(err)
		}
		job := checkJobFile(t, dir)
		if job.Data.Features != 2 || strings.Join(job.Data.ClassNames, ",") != "diabetic,healthy" {
			t.Errorf("features %d classes %q, want 2 [diabetic healthy]", job.Data.Features, job.Data.ClassNames)
		}
		if !strings.Contains(out.String(), "classes (sorted; reorder them with --classes or in job.yaml):\n  0 diabetic\n  1 healthy\n") {
			t.Errorf("the class order is not printed:\n%s", out.String())
		}
		for _, f := range []string{"client-0.csv", "client-2.csv", "validation.csv", "test.csv", "tokens.txt"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Error(err)
			}
		}
		// The split validation file loads against the job's classes.
		if _, err := loadSource(job, job.Data.Validation, "data.validation"); err != nil {
			t.Error(err)
		}
	})
	t.Run("classes/validation", func(t *testing.T) {
		dir := t.TempDir()
		var out bytes.Buffer
		err := runData(t.Context(), []string{"--csv", val, "--label", "outcome", "--classes", "healthy, diabetic", "--validation", val, "--clients", "3", "--out", dir}, &out, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		job := checkJobFile(t, dir)
		if job.Data.Features != 2 || strings.Join(job.Data.ClassNames, ",") != "healthy,diabetic" || job.Data.Validation.Label != "outcome" || len(job.Clients.Enrolment) != 3 {
			t.Errorf("features %d classes %q validation %+v clients %d", job.Data.Features, job.Data.ClassNames, job.Data.Validation, len(job.Clients.Enrolment))
		}
		e, err := loadSource(job, job.Data.Validation, "data.validation")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(e.Y, []int{0, 1}) {
			t.Errorf("validation labels %v, want [0 1] (healthy, diabetic)", e.Y)
		}
		if _, err := os.Stat(filepath.Join(dir, "client-0.csv")); err == nil {
			t.Error("client shards written though the validation file was given")
		}
	})
	t.Run("classes-miss-a-label", func(t *testing.T) {
		err := runData(t.Context(), []string{"--csv", csv, "--classes", "healthy,sick", "--out", t.TempDir()}, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "hospital.csv:") || !strings.Contains(err.Error(), `got "diabetic"`) {
			t.Errorf("error %v, want the file, line and label diabetic", err)
		}
	})
}
