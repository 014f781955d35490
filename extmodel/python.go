package extmodel

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// ErrNoPython: no interpreter imports the modules an adapter needs.
var ErrNoPython = errors.New("extmodel: no Python interpreter with the modules the adapter needs")

// FindPython returns the first interpreter that imports every module:
// $TALLY_PYTHON if set (and only it), else Debian's /usr/bin/python3
// (where apt's python3-torch, python3-numpy and python3-sklearn install),
// else python3 on PATH. A python3 of pyenv or a virtualenv earlier on PATH
// often lacks the system's packages, hence Debian's first.
func FindPython(modules ...string) (string, error) {
	candidates := []string{"/usr/bin/python3", "python3"}
	if p := os.Getenv("TALLY_PYTHON"); p != "" {
		candidates = []string{p}
	}
	imp := "import " + strings.Join(append([]string{"sys"}, modules...), ", ")
	var tried []string
	for _, c := range candidates {
		out, err := exec.Command(c, "-c", imp).CombinedOutput()
		if err == nil {
			return c, nil
		}
		tried = append(tried, fmt.Sprintf("%s: %s", c, lastLine(string(out), err)))
	}
	return "", fmt.Errorf("%w (%s): %s", ErrNoPython, strings.Join(modules, ", "), strings.Join(tried, "; "))
}

func lastLine(out string, err error) string {
	out = strings.TrimSpace(out)
	if out == "" {
		return err.Error()
	}
	lines := strings.Split(out, "\n")
	return lines[len(lines)-1]
}
