package longtest

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// root is the module's root, two levels up from this package.
const root = "../.."

// gatedTests finds every test function whose body calls longtest.Gate.
func gatedTests(t *testing.T) map[string]string {
	t.Helper()
	fn := regexp.MustCompile(`^func (Test\w+)\(`)
	found := map[string]string{}
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "out" || d.Name() == "bin") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") || strings.HasPrefix(path, filepath.Join(root, "internal", "longtest")) {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		current := ""
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if m := fn.FindStringSubmatch(line); m != nil {
				current = m[1]
			} else if strings.HasPrefix(line, "func ") {
				current = ""
			}
			if current != "" && strings.Contains(line, "longtest.Gate(") {
				found[current] = path
			}
		}
		return sc.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// longTests reads the Makefile's LONG_TESTS regular expression.
func longTests(t *testing.T) *regexp.Regexp {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^LONG_TESTS\s*:=\s*(.*)$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("Makefile: no LONG_TESTS := line")
	}
	re, err := regexp.Compile(string(m[1]))
	if err != nil {
		t.Fatalf("Makefile: LONG_TESTS %q: %v", m[1], err)
	}
	return re
}

// TestEveryGateIsRun fails when a gated test is not named by the
// Makefile's LONG_TESTS, so that it would never run.
func TestEveryGateIsRun(t *testing.T) {
	re := longTests(t)
	for name, path := range gatedTests(t) {
		if !re.MatchString(name) {
			t.Errorf("%s in %s calls longtest.Gate but the Makefile's LONG_TESTS (%s) does not name it: it would never run", name, path, re)
		}
	}
}

func TestGateSkipsUnlessEnabled(t *testing.T) {
	t.Setenv(Env, "")
	ran := false
	t.Run("gated", func(t *testing.T) {
		Gate(t)
		ran = true
	})
	if ran {
		t.Fatalf("Gate let the test run with %s unset", Env)
	}
	t.Setenv(Env, "1")
	t.Run("enabled", func(t *testing.T) {
		Gate(t)
		ran = true
	})
	if !ran {
		t.Fatalf("Gate skipped the test with %s=1", Env)
	}
}
