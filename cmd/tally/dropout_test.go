package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// dropoutJob writes an n-client breast-cancer job under dir with `tally
// data`, applies edits to its job file, and returns the job file and the
// client commands' arguments by client id.
func dropoutJob(t *testing.T, bin, dir, addr string, n, rounds int, edit func(map[string]any)) (string, map[string][]string, []string) {
	t.Helper()
	if out, err := exec.Command(bin, "data", "--dataset", "breast-cancer", "--clients", fmt.Sprint(n), "--rounds", fmt.Sprint(rounds),
		"--listen", addr, "--seed", "3", "--out", dir).CombinedOutput(); err != nil {
		t.Fatalf("tally data: %v\n%s", err, out)
	}
	path := filepath.Join(dir, "job.yaml")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var job map[string]any
	if err := yaml.Unmarshal(raw, &job); err != nil {
		t.Fatal(err)
	}
	edit(job)
	if raw, err = yaml.Marshal(job); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	toks, err := os.ReadFile(filepath.Join(dir, "tokens.txt"))
	if err != nil {
		t.Fatal(err)
	}
	clients := map[string][]string{}
	var ids []string
	for _, line := range strings.Split(strings.TrimSpace(string(toks)), "\n") {
		f := strings.Fields(line) // id token file
		clients[f[0]] = []string{"client", "--join", addr, "--token", f[1], "--data", filepath.Join(dir, f[2])}
		ids = append(ids, f[0])
	}
	return path, clients, ids
}

// logLine is the part of the coordinator's JSON log lines the tests read.
type logLine struct {
	Time   time.Time `json:"time"`
	Msg    string    `json:"msg"`
	Round  int       `json:"round"`
	Silent string    `json:"silent"`
}

// procJob is a coordinator and its clients running as processes.
type procJob struct {
	t       *testing.T
	coord   *exec.Cmd
	stdout  bytes.Buffer
	mu      sync.Mutex
	lines   []logLine
	stderr  bytes.Buffer
	clients map[string]*exec.Cmd
	outs    map[string]*bytes.Buffer
	// onLine is called, from the log reader, with each coordinator log line.
	onLine   func(*procJob, logLine)
	readDone chan struct{}
}

func startProcJob(t *testing.T, ctx context.Context, bin, job string, clients map[string][]string, onLine func(*procJob, logLine)) *procJob {
	t.Helper()
	p := &procJob{t: t, clients: map[string]*exec.Cmd{}, outs: map[string]*bytes.Buffer{}, onLine: onLine, readDone: make(chan struct{})}
	p.coord = exec.CommandContext(ctx, bin, "coordinator", "--config", job, "--metrics-addr", "")
	p.coord.Stdout = &p.stdout
	pipe, err := p.coord.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.coord.Start(); err != nil {
		t.Fatal(err)
	}
	for id, a := range clients {
		var out bytes.Buffer
		c := exec.CommandContext(ctx, bin, a...)
		c.Stdout, c.Stderr = &out, &out
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		p.clients[id], p.outs[id] = c, &out
	}
	go func() {
		defer close(p.readDone)
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var l logLine
			_ = json.Unmarshal(sc.Bytes(), &l)
			p.mu.Lock()
			p.stderr.Write(sc.Bytes())
			p.stderr.WriteByte('\n')
			p.lines = append(p.lines, l)
			p.mu.Unlock()
			if p.onLine != nil {
				p.onLine(p, l)
			}
		}
		_, _ = io.Copy(io.Discard, pipe)
	}()
	return p
}

// wait waits for the coordinator and returns its error and log.
func (p *procJob) wait() (error, string) {
	<-p.readDone
	err := p.coord.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return err, p.stderr.String()
}

// TestSmallFederationLosesAClient: three hospitals under the default he
// (clients.min 2, min_group_size 3) tolerate no dropout. The coordinator
// says so at start; when one client is SIGKILLed the job stops before its
// last round, and the coordinator and the surviving clients exit non-zero
// with the reason, instead of printing "done" and exiting 0.
func TestSmallFederationLosesAClient(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildTally(t)
	dir := t.TempDir()
	addr := freePort(t)
	const rounds = 10
	job, clients, ids := dropoutJob(t, bin, dir, addr, 3, rounds, func(j map[string]any) {
		j["round_timeout"] = "8s"
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	victim := ids[2]
	var once sync.Once
	killed := make(chan struct{})
	p := startProcJob(t, ctx, bin, job, clients, func(p *procJob, l logLine) {
		if l.Msg == "round completed" && l.Round == 2 {
			once.Do(func() {
				_ = p.clients[victim].Process.Signal(syscall.SIGKILL)
				close(killed)
			})
		}
	})
	err, logs := p.wait()
	select {
	case <-killed:
	default:
		t.Fatalf("round 2 never completed; coordinator: %v\n%s\n%s", err, p.stdout.String(), logs)
	}
	out := p.stdout.String()
	t.Logf("coordinator stdout:\n%s", out)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Errorf("coordinator exited with %v, want a non-zero exit status for a job that stopped early", err)
	}
	if !strings.Contains(out, "tolerates 0 dropout(s)") || !strings.Contains(out, "warning: one client lost for good stops this job") {
		t.Errorf("coordinator did not say at start that the job tolerates no dropout:\n%s", out)
	}
	if !strings.Contains(logs, `"msg":"the job tolerates no dropout`) {
		t.Errorf("coordinator did not log its dropout tolerance")
	}
	if strings.Contains(out, "done after round") {
		t.Errorf("coordinator says the stopped job is done:\n%s", out)
	}
	if !strings.Contains(out, fmt.Sprintf("stopped after round 2 of %d: round 3 failed", rounds)) {
		t.Errorf("coordinator did not print why the job stopped:\n%s", out)
	}
	if !strings.Contains(out, "contributions (") {
		t.Errorf("coordinator did not print the contribution table:\n%s", out)
	}
	for _, id := range ids {
		c := p.clients[id]
		werr := c.Wait()
		if id == victim {
			continue
		}
		if !errors.As(werr, &exit) || exit.ExitCode() == 0 {
			t.Errorf("client %s exited with %v, want a non-zero exit status:\n%s", id, werr, p.outs[id])
		}
		if !strings.Contains(p.outs[id].String(), fmt.Sprintf("stopped after round 2 of %d", rounds)) {
			t.Errorf("client %s does not say the job stopped early:\n%s", id, p.outs[id])
		}
	}
}

// TestCommitteeMembersKilled: a 5-client he job (committee 5, threshold 3,
// clients.min 3) loses c − t = 2 committee members to SIGKILL after round
// 3. Every later round completes, at most one round timeout is lost in
// all, and the rounds after that run at the speed of those before.
func TestCommitteeMembersKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildTally(t)
	dir := t.TempDir()
	addr := freePort(t)
	const rounds, killAfter = 8, 3
	// 15 s: longer than the longest gap between two polls of a live client
	// (the engine's pollGap, 12 s), so that a member that died unseen after
	// its last answer is known not to poll by the end of a timed-out task.
	const timeout = 15 * time.Second
	job, clients, ids := dropoutJob(t, bin, dir, addr, 5, rounds, func(j map[string]any) {
		j["round_timeout"] = timeout.String()
		j["committee"] = map[string]any{"size": 5, "threshold": 3}
		c := j["clients"].(map[string]any)
		c["min"] = 3
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var once sync.Once
	killed := make(chan struct{})
	p := startProcJob(t, ctx, bin, job, clients, func(p *procJob, l logLine) {
		if l.Msg == "round completed" && l.Round == killAfter {
			once.Do(func() {
				for _, id := range ids[:2] {
					_ = p.clients[id].Process.Signal(syscall.SIGKILL)
				}
				close(killed)
			})
		}
	})
	err, logs := p.wait()
	out := p.stdout.String()
	if err != nil {
		t.Fatalf("coordinator: %v\n%s\n%s", err, out, logs)
	}
	select {
	case <-killed:
	default:
		t.Fatalf("round %d never completed:\n%s", killAfter, logs)
	}
	if !strings.Contains(out, fmt.Sprintf("done after round %d", rounds)) {
		t.Errorf("coordinator did not finish %d rounds:\n%s", rounds, out)
	}
	if !strings.Contains(out, "tolerates 2 dropout(s)") {
		t.Errorf("coordinator did not say the job tolerates 2 dropouts:\n%s", out)
	}
	p.mu.Lock()
	lines := p.lines
	p.mu.Unlock()
	completed := map[int]time.Time{}
	var decryptTimeouts, failed int
	for _, l := range lines {
		switch l.Msg {
		case "round completed":
			completed[l.Round] = l.Time
		case "decryption timed out":
			decryptTimeouts++
			t.Logf("decryption timed out, silent: %s", l.Silent)
		case "round failed":
			failed++
		}
	}
	var before, after []time.Duration
	var slow int
	for r := 2; r <= rounds; r++ {
		d := completed[r].Sub(completed[r-1])
		if r <= killAfter {
			before = append(before, d)
			continue
		}
		after = append(after, d)
		if d >= timeout*9/10 {
			slow++
		}
		if d >= 2*timeout {
			t.Errorf("round %d took %s, two round timeouts (%s) or more", r, d.Round(time.Millisecond), timeout)
		}
	}
	t.Logf("round times before the kill (rounds 2–%d): %v", killAfter, before)
	t.Logf("round times after the kill (rounds %d–%d): %v; round timeout %s", killAfter+1, rounds, after, timeout)
	t.Logf("decryption timeouts %d, failed rounds %d", decryptTimeouts, failed)
	if slow > 1 || decryptTimeouts > 1 || failed > 0 {
		t.Errorf("%d rounds after the kill took a round timeout or more, %d decryptions timed out, %d rounds failed; want at most one timeout in all", slow, decryptTimeouts, failed)
	}
	for _, id := range ids[2:] {
		if err := p.clients[id].Wait(); err != nil {
			t.Errorf("client %s: %v\n%s", id, err, p.outs[id])
		}
	}
	for _, id := range ids[:2] {
		_ = p.clients[id].Wait()
	}
}
