package engine

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// The round engine is pure (docs/STYLE.md §1–3, docs/DESIGN.md §2): events
// in, actions out, with no network, disk, clock, logging or global
// randomness, so that the same events give the same actions byte for
// byte, a crash can be replayed, and trace tests never sleep. The checks
// below keep it so. They read the package's source (every non-test file)
// and list what its imports reach.

// engineFiles are the package's non-test files.
func engineFiles(t *testing.T) []string {
	t.Helper()
	all, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range all {
		if !strings.HasSuffix(f, "_test.go") {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		t.Fatal("no source files found")
	}
	return out
}

// modulePath is this module's import path.
const modulePath = "github.com/tallyfl/tally"

// forbiddenImport says why the engine may not import p directly, or "".
// The standard library's I/O packages are refused by name; of this
// module, the packages that do I/O or sit above the engine.
func forbiddenImport(p string) string {
	under := func(prefix string) bool { return p == prefix || strings.HasPrefix(p, prefix+"/") }
	switch {
	case under("net"), under("os"), p == "io/ioutil", p == "syscall", under("plugin"):
		return "network, files or processes"
	case under("log"):
		return "logging (log/slog included): the driver logs the engine's ActLog actions"
	case p == "crypto/rand":
		return "unseeded randomness: the engine derives its randomness from the job seed"
	case under("google.golang.org/grpc"), under(modulePath + "/proto"):
		return "gRPC and its generated types stop at the service"
	case under("go.etcd.io/bbolt"):
		return "bbolt: persistence is the driver's ActPersist"
	case under("go.opentelemetry.io"), under("github.com/prometheus"), under(modulePath + "/internal/telemetry"):
		return "telemetry belongs to the driver"
	case under(modulePath + "/internal/auth"):
		return "call authentication belongs to the service (and imports gRPC)"
	case under(modulePath + "/coordinator"), under(modulePath + "/client"), under(modulePath + "/cmd"), under(modulePath + "/experiments"):
		return "imports point down only: engine ← coordinator ← cmd"
	}
	return ""
}

// forbiddenDep says why p may not be reached at all, through any chain of
// imports: third-party libraries whose only business is I/O. (The
// standard library's os and log are reached through gorgonia and the CSV
// loaders of package dataset whatever the engine does; the direct-import
// and call checks cover those.)
func forbiddenDep(p string) string {
	under := func(prefix string) bool { return p == prefix || strings.HasPrefix(p, prefix+"/") }
	switch {
	case under("google.golang.org/grpc"):
		return "gRPC"
	case under("go.etcd.io/bbolt"):
		return "bbolt"
	case under("go.opentelemetry.io"), under("github.com/prometheus"):
		return "telemetry"
	}
	return ""
}

// forbiddenUse says why the engine may not refer to pkg.name, or "". It
// catches calls and function values alike (t := time.Now).
func forbiddenUse(pkg, name string) string {
	switch pkg {
	case "time":
		switch name {
		case "Now", "Since", "Until", "After", "AfterFunc", "Tick", "NewTimer", "NewTicker", "Sleep":
			return "the clock: time is an input, counted in ticks the driver feeds in (EvTick)"
		}
	case "math/rand", "math/rand/v2":
		switch name {
		case "New", "NewPCG", "NewChaCha8", "NewSource", "NewZipf", "Rand", "PCG", "ChaCha8", "Source", "Zipf":
			return "" // a generator the engine seeds itself
		}
		return "the global generator: the engine's randomness comes from a PRNG keyed by (job seed, purpose, round)"
	case "crypto/rand":
		return "unseeded randomness"
	}
	return ""
}

// violation is one breach of purity, named by file and line.
type violation struct {
	File string // the file, or "import P" for what import P reaches
	Line int    // 0 for a dependency
	What string
	Why  string
}

// key names the breach without its line, so that edits elsewhere in a file
// do not change it.
func (v violation) key() string { return v.File + ": " + v.What }

func (v violation) String() string {
	if v.Line == 0 {
		return v.key()
	}
	return fmt.Sprintf("%s:%d: %s", v.File, v.Line, v.What)
}

// importName is the name a file refers to an import by: its alias, or the
// last element of its path without a major-version suffix.
func importName(spec *ast.ImportSpec, p string) string {
	if spec.Name != nil {
		return spec.Name.Name
	}
	base := path.Base(p)
	if len(base) > 1 && base[0] == 'v' && strings.Trim(base[1:], "0123456789") == "" {
		base = path.Base(path.Dir(p))
	}
	if i := strings.Index(base, ".v"); i > 0 { // gopkg.in/yaml.v3
		base = base[:i]
	}
	return base
}

// checkSources parses files (paths relative to dir) and returns every
// forbidden import, every forbidden use of a package-level function, every
// go statement, and the direct imports the files share.
func checkSources(dir string, files []string) (vs []violation, imports []string, err error) {
	fset := token.NewFileSet()
	seen := map[string]bool{}
	for _, name := range files {
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, nil, err
		}
		names := map[string]string{} // local name → import path
		for _, spec := range f.Imports {
			p, _ := strconv.Unquote(spec.Path.Value)
			if !seen[p] {
				seen[p] = true
				imports = append(imports, p)
			}
			names[importName(spec, p)] = p
			if why := forbiddenImport(p); why != "" {
				vs = append(vs, violation{name, fset.Position(spec.Pos()).Line, "imports " + p, why})
			}
		}
		// Locals that shadow an import's name (a variable called rand)
		// are declared inside functions; the engine's files declare none,
		// and a shadowed name would only make this check stricter.
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.SelectorExpr:
				id, ok := n.X.(*ast.Ident)
				if !ok {
					return true
				}
				if p, ok := names[id.Name]; ok {
					if why := forbiddenUse(p, n.Sel.Name); why != "" {
						vs = append(vs, violation{name, fset.Position(n.Pos()).Line, "uses " + p + "." + n.Sel.Name, why})
					}
				}
			case *ast.GoStmt:
				vs = append(vs, violation{name, fset.Position(n.Pos()).Line, "starts a goroutine",
					"Step is sequential: the order of its actions must not depend on the scheduler"})
			}
			return true
		})
	}
	sort.Strings(imports)
	return vs, imports, nil
}

// checkDeps lists every package that imports reaches (go list -deps) and
// returns those that forbiddenDep refuses, each with the direct import
// that brings it in.
func checkDeps(t *testing.T, imports []string) []violation {
	t.Helper()
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		goTool = "go"
	}
	var vs []violation
	for _, imp := range imports {
		if !strings.Contains(strings.SplitN(imp, "/", 2)[0], ".") {
			continue // the standard library
		}
		out, err := exec.Command(goTool, "list", "-deps", imp).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", imp, err)
		}
		bad := map[string][]string{} // kind → the packages of that kind reached
		for _, dep := range strings.Fields(string(out)) {
			if kind := forbiddenDep(dep); kind != "" {
				bad[kind] = append(bad[kind], dep)
			}
		}
		for _, kind := range slices.Sorted(maps.Keys(bad)) {
			pkgs := bad[kind]
			vs = append(vs, violation{"import " + imp, 0, "reaches " + kind,
				fmt.Sprintf("what the engine takes from this module is pure computation; %s is I/O (%s)", strings.Join(pkgs[:min(3, len(pkgs))], ", "), kind)})
		}
	}
	return vs
}

// TestEnginePurity checks the engine's files: no forbidden import, no
// clock, no global randomness, no goroutine, and nothing reachable from
// their imports that does I/O.
func TestEnginePurity(t *testing.T) {
	vs, imports, err := checkSources(".", engineFiles(t))
	if err != nil {
		t.Fatal(err)
	}
	vs = append(vs, checkDeps(t, imports)...)
	for _, v := range vs {
		t.Errorf("the round engine must stay pure: %s: %s", v, v.Why)
	}
}

// TestPurityCheckCatches runs the check on a file that breaks each rule
// once, so that a check that has gone blind fails here.
func TestPurityCheckCatches(t *testing.T) {
	dir := t.TempDir()
	src := `package engine

import (
	"log/slog"
	mrand "math/rand/v2"
	tm "time"

	"github.com/tallyfl/tally/internal/telemetry"
)

var now = tm.Now

func step(r *mrand.Rand) int {
	slog.Info("step")
	go func() {}()
	_ = telemetry.PhaseRound
	d := tm.Since(now())
	return int(d) + mrand.IntN(3) + r.IntN(3)
}
`
	if err := os.WriteFile(filepath.Join(dir, "bad.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	vs, _, err := checkSources(dir, []string{"bad.go"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range vs {
		got = append(got, v.String())
	}
	want := []string{
		"bad.go:4: imports log/slog",
		"bad.go:8: imports github.com/tallyfl/tally/internal/telemetry",
		"bad.go:11: uses time.Now",
		"bad.go:15: starts a goroutine",
		"bad.go:17: uses time.Since",
		"bad.go:18: uses math/rand/v2.IntN",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("the check found\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
	deps := checkDeps(t, []string{modulePath + "/ledger", modulePath + "/valuation"})
	if len(deps) != 1 || deps[0].key() != "import "+modulePath+"/ledger: reaches bbolt" {
		t.Fatalf("dependency check found %v, want ledger reaching bbolt and valuation clean", deps)
	}
}
