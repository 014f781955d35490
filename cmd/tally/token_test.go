package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTokenCommand: tally data issues one single-use token per client into
// the tokens file, hashed; tally token create prints a new token once and
// stores only its hash; list shows no secret; revoke appends a revocation;
// mistakes name what is wrong.
func TestTokenCommand(t *testing.T) {
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	if code := run([]string{"data", "--clients", "3", "--out", dir}, &out, &errOut); code != 0 {
		t.Fatalf("tally data: %d\n%s%s", code, out.String(), errOut.String())
	}
	job := filepath.Join(dir, "job.yaml")
	tokensFile := filepath.Join(dir, "breast-cancer-job.tokens")
	given, err := os.ReadFile(filepath.Join(dir, "tokens.txt"))
	if err != nil {
		t.Fatal(err)
	}
	stored, err := os.ReadFile(tokensFile)
	if err != nil {
		t.Fatal(err)
	}
	jobText, _ := os.ReadFile(job)
	for _, line := range strings.Split(strings.TrimSpace(string(given)), "\n") {
		tok := strings.Fields(line)[1]
		if strings.Contains(string(stored), tok) || strings.Contains(string(jobText), tok) {
			t.Errorf("token %s of tokens.txt appears in the tokens file or the job file", tok)
		}
	}
	if n := strings.Count(string(stored), `"op":"create"`); n != 3 {
		t.Errorf("tokens file holds %d tokens, want 3:\n%s", n, stored)
	}

	out.Reset()
	errOut.Reset()
	if code := run([]string{"token", "create", "--job", job, "--client", "client-1", "--expires", "72h"}, &out, &errOut); code != 0 {
		t.Fatalf("token create: %d\n%s", code, errOut.String())
	}
	tok := strings.TrimSpace(out.String())
	if !strings.HasPrefix(tok, "tly_") || !strings.Contains(errOut.String(), "client-1") {
		t.Fatalf("token create printed %q / %q", tok, errOut.String())
	}
	stored, _ = os.ReadFile(tokensFile)
	if strings.Contains(string(stored), tok) {
		t.Error("the tokens file holds the token itself")
	}
	if fi, err := os.Stat(tokensFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("tokens file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}

	out.Reset()
	if code := run([]string{"token", "list", "--job", job}, &out, &errOut); code != 0 || strings.Contains(out.String(), tok) || strings.Count(out.String(), "client-1") != 2 {
		t.Errorf("token list (%d):\n%s", code, out.String())
	}
	id := ""
	for _, l := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[2] == "client-1" {
			id = f[1]
		}
	}
	out.Reset()
	if code := run([]string{"token", "revoke", "--job", job, "--token-id", id}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "revoked") {
		t.Errorf("token revoke %s: %d %s%s", id, code, out.String(), errOut.String())
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown client", []string{"token", "create", "--job", job, "--client", "nobody"}, `client "nobody" is not in the job`},
		{"unknown token id", []string{"token", "revoke", "--job", job, "--token-id", "tok-nope"}, `no token "tok-nope"`},
		{"no job", []string{"token", "create", "--client", "client-0"}, "--job is required"},
		{"unknown subcommand", []string{"token", "mint", "--job", job}, `unknown subcommand "mint"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var o, e bytes.Buffer
			if code := run(tc.args, &o, &e); code == 0 || !strings.Contains(o.String()+e.String(), tc.want) {
				t.Errorf("exit %d, output %q, want it to say %q", code, o.String()+e.String(), tc.want)
			}
		})
	}
}
