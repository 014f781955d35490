// Package longtest gates the process-level tests too long for every
// `make test` run. A gated test skips, saying where it runs, unless
// TALLY_LONG_TESTS=1; `make test-long` sets it and runs exactly the tests
// the Makefile's LONG_TESTS names, and CI (.ci/run) runs `make test-long`
// after `make test`, so no gated test goes unrun. TestEveryGateIsRun
// checks that every test calling [Gate] is named in LONG_TESTS.
package longtest

import (
	"os"
	"testing"
)

// Env is the variable that lets gated tests run.
const Env = "TALLY_LONG_TESTS"

// Enabled reports whether gated tests run in this process.
func Enabled() bool { return os.Getenv(Env) == "1" }

// Gate skips t unless long tests are enabled.
func Gate(t testing.TB) {
	t.Helper()
	if !Enabled() {
		t.Skipf("a long test: it runs in `make test-long` (%s=1), which CI runs after `make test`", Env)
	}
}
