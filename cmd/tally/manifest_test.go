package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// dataJob runs tally data for 3 clients into a temp dir and returns the
// dir, its output and the manifest fingerprint it printed.
func dataJob(t *testing.T, listen string, extra ...string) (string, string, string) {
	t.Helper()
	dir := t.TempDir()
	var out bytes.Buffer
	args := append([]string{"data", "--clients", "3", "--rounds", "2", "--listen", listen, "--out", dir}, extra...)
	if code := run(args, &out, &out); code != 0 {
		t.Fatalf("tally data: exit %d\n%s", code, out.String())
	}
	m := regexp.MustCompile(`manifest sha256 ([0-9a-f]{64})`).FindStringSubmatch(out.String())
	if m == nil {
		return dir, out.String(), ""
	}
	return dir, out.String(), m[1]
}

// TestManifestCommands: tally data's manifest verifies under the
// fingerprint it printed and not under another; an edited copy does not
// verify; tally manifest create signs one for the job from the clients'
// key files (tally client keygen), which the coordinator accepts; and a
// job file that contradicts its manifest, or a TLS certificate it does not
// pin, stops the coordinator with the field named.
func TestManifestCommands(t *testing.T) {
	dir, _, sha := dataJob(t, "127.0.0.1:1")
	if sha == "" {
		t.Fatal("tally data printed no manifest fingerprint")
	}
	mf := filepath.Join(dir, "job.manifest.json")
	var out bytes.Buffer
	if code := run([]string{"manifest", "verify", "--sha256", sha, mf}, &out, &out); code != 0 || !strings.Contains(out.String(), sha) {
		t.Fatalf("manifest verify with its own fingerprint: exit %d\n%s", code, out.String())
	}
	out.Reset()
	other := strings.Repeat("0", 64)
	if code := run([]string{"manifest", "verify", "--sha256", other, mf}, &out, &out); code != 1 || !strings.Contains(out.String(), "fingerprint does not match") {
		t.Fatalf("manifest verify with another fingerprint: exit %d\n%s", code, out.String())
	}
	b, _ := os.ReadFile(mf)
	edited := filepath.Join(dir, "edited.json")
	os.WriteFile(edited, bytes.Replace(b, []byte(`"min_group_size": 3`), []byte(`"min_group_size": 2`), 1), 0o644)
	out.Reset()
	if code := run([]string{"manifest", "show", edited}, &out, &out); code != 1 || !strings.Contains(out.String(), "signature does not verify") {
		t.Fatalf("manifest show of an edited manifest: exit %d\n%s", code, out.String())
	}

	// A data holder's key, then a manifest that lists it.
	key := filepath.Join(t.TempDir(), "hospital.key")
	out.Reset()
	if code := run([]string{"client", "keygen", "--key", key}, &out, &out); code != 0 || !strings.Contains(out.String(), "public key ") {
		t.Fatalf("client keygen: exit %d\n%s", code, out.String())
	}
	if code := run([]string{"client", "keygen", "--key", key}, &out, &out); code != 1 {
		t.Fatalf("client keygen over an existing key file: exit %d, want 1", code)
	}
	out.Reset()
	job := filepath.Join(dir, "job.yaml")
	args := []string{"manifest", "create", "--job", job, "--owner-key", filepath.Join(t.TempDir(), "owner.key"),
		"--participant-key", "client-0=" + key, "--participant-key", "client-1=" + filepath.Join(dir, "client-1.csv.key"),
		"--participant-key", "client-2=" + filepath.Join(dir, "client-2.csv.key")}
	if code := run(args, &out, &out); code != 0 || !strings.Contains(out.String(), "with 3 participants") {
		t.Fatalf("manifest create: exit %d\n%s", code, out.String())
	}
	out.Reset()
	if code := run([]string{"manifest", "show", mf}, &out, &out); code != 0 || strings.Contains(out.String(), sha) {
		t.Fatalf("manifest show after create: exit %d (the fingerprint must have changed)\n%s", code, out.String())
	}

	// The coordinator refuses a job file that contradicts the manifest.
	y, _ := os.ReadFile(job)
	os.WriteFile(job, bytes.Replace(y, []byte("clients:\n"), []byte("min_group_size: 2\nclients:\n"), 1), 0o644)
	out.Reset()
	if code := run([]string{"coordinator", "--config", job, "--metrics-addr", ""}, &out, &out); code != 1 ||
		!strings.Contains(out.String(), "min_group_size is 2, the manifest's is at least 3") {
		t.Fatalf("coordinator with a job contradicting its manifest: exit %d\n%s", code, out.String())
	}
	os.WriteFile(job, y, 0o644)
	// ... and a TLS certificate the manifest does not pin.
	if _, _, err := writePKI(filepath.Join(dir, "tls"), nil); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := run([]string{"coordinator", "--config", job, "--metrics-addr", ""}, &out, &out); code != 1 ||
		!strings.Contains(out.String(), "the manifest pins") {
		t.Fatalf("coordinator with an unpinned certificate: exit %d\n%s", code, out.String())
	}
}

// TestClientRefusesPlaintextCoordinator (attack g, as a user meets it): a
// coordinator started with --insecure-plaintext, and a client that did not
// ask for plaintext: the client exits at once saying so, its token unspent.
func TestClientRefusesPlaintextCoordinator(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildTally(t)
	addr := freePort(t)
	dir, _, _ := dataJob(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var coordOut bytes.Buffer
	coord := exec.CommandContext(ctx, bin, "coordinator", "--config", filepath.Join(dir, "job.yaml"), "--metrics-addr", "", "--insecure-plaintext")
	coord.Stdout, coord.Stderr = &coordOut, &coordOut
	if err := coord.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			coord.Process.Kill()
			coord.Wait()
		}
	}
	defer stop()
	f, err := os.Open(filepath.Join(dir, "tokens.txt"))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(f)
	sc.Scan()
	fields := strings.Fields(sc.Text())
	f.Close()
	cctx, ccancel := context.WithTimeout(ctx, 60*time.Second)
	defer ccancel()
	out, err := exec.CommandContext(cctx, bin, "client", "--join", addr, "--token", fields[1], "--data", filepath.Join(dir, fields[2])).CombinedOutput()
	if cctx.Err() != nil {
		t.Fatalf("the client did not give up on a plaintext coordinator within 60 s:\n%s", out)
	}
	if err == nil || !strings.Contains(string(out), "does not speak TLS") {
		t.Fatalf("client against a plaintext coordinator: %v\n%s", err, out)
	}
	stop() // before its output is read
	if strings.Contains(coordOut.String(), "client enrolled") {
		t.Errorf("the client enrolled over plaintext:\n%s", coordOut.String())
	}
	t.Log(strings.TrimSpace(string(out)))
}
