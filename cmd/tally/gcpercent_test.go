package main

import (
	"bytes"
	"context"
	"errors"
	"runtime/debug"
	"strings"
	"testing"
)

func TestGCPercentRefusesNonPositive(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := runCoordinator(context.Background(), []string{"--config", "job.yaml", "--gc-percent", "0"}, &stdout, &stderr)
	if !errors.Is(err, errUsage) || !strings.Contains(stderr.String(), "--gc-percent 0: want a percentage of at least 1") {
		t.Errorf("runCoordinator = %v, stderr %q; want errUsage naming the flag", err, stderr.String())
	}
}

// The coordinator runs at its own GOGC while it runs, and puts back the
// process's setting when it returns (tests run coordinators in process).
func TestGCPercentRestoredAfterTheCoordinator(t *testing.T) {
	before := debug.SetGCPercent(100)
	defer debug.SetGCPercent(before)
	var stdout, stderr bytes.Buffer
	// A job file that does not exist: the coordinator returns after its
	// flags are applied.
	_ = runCoordinator(context.Background(), []string{"--config", t.TempDir() + "/missing.yaml", "--gc-percent", "30"}, &stdout, &stderr)
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC after the coordinator returned: %d, want the 100 it found", got)
	}
}
