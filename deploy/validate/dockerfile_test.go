package main

import (
	"debug/elf"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, its continuation lines joined.
type instruction struct {
	op, args string
	line     int
}

func parseDockerfile(t *testing.T, path string) []instruction {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		cont := strings.HasSuffix(trimmed, "\\")
		cur.WriteString(strings.TrimSuffix(trimmed, "\\"))
		cur.WriteByte(' ')
		if !cont {
			op, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
			out = append(out, instruction{op: strings.ToUpper(op), args: strings.TrimSpace(args), line: start})
			cur.Reset()
		}
	}
	return out
}

// TestDockerfileShape checks the image's recipe without a container
// daemon: a Go build stage of go.mod's Go version building a static
// binary, and a final stage of a shell-less static base that holds only
// that binary and runs it as a user other than root.
func TestDockerfileShape(t *testing.T) {
	const path = "../../Dockerfile"
	ins := parseDockerfile(t, path)
	var stages [][]instruction
	for _, in := range ins {
		if in.op == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) == 0 {
			t.Fatalf("%s:%d: %s before the first FROM", path, in.line, in.op)
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], in)
	}
	if len(stages) != 2 {
		t.Fatalf("%s: %d stages, want 2 (build, final)", path, len(stages))
	}

	gomod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gomod)
	if goVersion == nil {
		t.Fatal("../../go.mod: no go directive")
	}
	build := stages[0]
	if want := regexp.MustCompile(`^golang:` + regexp.QuoteMeta(string(goVersion[1])) + `(-\S+)? AS build$`); !want.MatchString(build[0].args) {
		t.Errorf("%s:%d: build stage FROM %q, want golang:%s… AS build (go.mod's go directive)", path, build[0].line, build[0].args, goVersion[1])
	}
	static := false
	for _, in := range build {
		if in.op == "RUN" && strings.Contains(in.args, "go build") {
			static = strings.Contains(in.args, "CGO_ENABLED=0") && strings.Contains(in.args, "-o /out/tally")
		}
	}
	if !static {
		t.Errorf("%s: the build stage has no RUN CGO_ENABLED=0 go build … -o /out/tally", path)
	}

	final := stages[1]
	if base := final[0].args; base != "scratch" && !strings.HasPrefix(base, "gcr.io/distroless/static") {
		t.Errorf("%s:%d: final stage FROM %q, want scratch or gcr.io/distroless/static…", path, final[0].line, base)
	}
	var user, entrypoint string
	for _, in := range final[1:] {
		switch in.op {
		case "COPY":
			if in.args != "--from=build /out/tally /usr/local/bin/tally" {
				t.Errorf("%s:%d: final stage COPY %s: it holds the binary only", path, in.line, in.args)
			}
		case "USER":
			user = in.args
		case "ENTRYPOINT":
			entrypoint = in.args
		case "CMD", "LABEL", "EXPOSE", "ENV":
		default:
			t.Errorf("%s:%d: final stage %s: the base has no shell to run it, and the image holds the binary only", path, in.line, in.op)
		}
	}
	if u, _, _ := strings.Cut(user, ":"); u == "" || u == "0" || u == "root" {
		t.Errorf("%s: final stage USER %q, want a user other than root", path, user)
	}
	var argv []string
	if err := json.Unmarshal([]byte(entrypoint), &argv); err != nil || len(argv) != 1 || argv[0] != "/usr/local/bin/tally" {
		t.Errorf("%s: ENTRYPOINT %s, want the exec form [\"/usr/local/bin/tally\"] (no shell to wrap it)", path, entrypoint)
	}
}

// TestStaticBinary checks the binary the Dockerfile's build command makes
// (`make chart` builds it and names it in TALLY_STATIC_BINARY): an
// executable with no program interpreter and no shared library, which is
// what runs on a base without libc.
func TestStaticBinary(t *testing.T) {
	path := os.Getenv("TALLY_STATIC_BINARY")
	if path == "" {
		t.Skip("TALLY_STATIC_BINARY not set (make chart sets it)")
	}
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has a program interpreter: dynamically linked", path)
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	if len(libs) > 0 {
		t.Errorf("%s needs shared libraries %v", path, libs)
	}
}
