package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tallyfl/tally/edge"
)

// syncBuffer is a bytes.Buffer safe for a command writing to it while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// edgeJob writes a job (tally data, with TLS) whose edges list holds
// edge-0 with a key from tally edge keygen, runs its coordinator in this
// process with coordFlags, and returns the job directory, the
// coordinator's address and edge-0's key file. The coordinator stops with
// the test.
func edgeJob(t *testing.T, coordFlags ...string) (dir, addr, keyFile string) {
	t.Helper()
	dir, addr = t.TempDir(), freePort(t)
	if err := runData(context.Background(), []string{"--dataset", "breast-cancer", "--clients", "3", "--rounds", "1", "--listen", addr, "--out", dir}, io.Discard, io.Discard); err != nil {
		t.Fatalf("tally data: %v", err)
	}
	keyFile = filepath.Join(dir, "edge.key")
	var pub bytes.Buffer
	if err := runEdgeKeygen([]string{"--key", keyFile}, &pub, io.Discard); err != nil {
		t.Fatal(err)
	}
	jf, err := os.OpenFile(filepath.Join(dir, "job.yaml"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fmt.Fprintf(jf, "edges:\n    - id: edge-0\n      public_key: %s\n", strings.TrimSpace(pub.String()))
	if cerr := jf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var coordErr syncBuffer
	go func() {
		defer close(done)
		_ = runCoordinator(ctx, append([]string{"--config", filepath.Join(dir, "job.yaml"), "--metrics-addr", ""}, coordFlags...), io.Discard, &coordErr)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("coordinator stderr:\n%s", coordErr.String())
		}
	})
	return dir, addr, keyFile
}

// runEdgeFor runs tally edge with args for at most d: its error, or
// errStillRunning if it was still running then (and was stopped).
func runEdgeFor(d time.Duration, args []string, stderr io.Writer) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- runEdge(ctx, args, io.Discard, stderr) }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		cancel()
		<-done
		return errStillRunning
	}
}

var errStillRunning = errors.New("still running")

// An edge whose id the job does not list, or whose key is not the one the
// job lists for its id, does not start: tally edge fails with the
// coordinator's reason, naming the edge and the coordinator, and logs it
// at ERROR. It used to run all job long relaying every upload, its
// EdgeTask calls refused, without a word in its log.
func TestEdgeNotListedFailsAtStart(t *testing.T) {
	dir, addr, keyFile := edgeJob(t)
	otherKey := filepath.Join(dir, "other.key")
	if err := runEdgeKeygen([]string{"--key", otherKey}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	tlsArgs := []string{"--coordinator", addr, "--tls-ca", filepath.Join(dir, "tls", "ca.pem"),
		"--tls-cert", filepath.Join(dir, "tls", "coordinator.pem"), "--tls-key", filepath.Join(dir, "tls", "coordinator.key")}
	for name, c := range map[string]struct{ id, key string }{
		"unlisted id":            {"edge-9", keyFile},
		"listed id, another key": {"edge-0", otherKey},
	} {
		var stderr syncBuffer
		args := append([]string{"--id", c.id, "--key", c.key, "--listen", freePort(t)}, tlsArgs...)
		err := runEdgeFor(30*time.Second, args, &stderr)
		if !errors.Is(err, edge.ErrNotListed) {
			t.Errorf("%s: tally edge = %v, want ErrNotListed at start\nstderr:\n%s", name, err, stderr.String())
			continue
		}
		for _, want := range []string{c.id, addr, "not an edge of this job"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not name %q", name, err, want)
			}
		}
		if log := stderr.String(); !strings.Contains(log, `"level":"ERROR"`) || !strings.Contains(log, `"edge":"`+c.id+`"`) || !strings.Contains(log, `"coordinator":"`+addr+`"`) {
			t.Errorf("%s: no ERROR naming the edge in its log:\n%s", name, log)
		}
	}
	// The listed edge, with its key, starts and serves.
	var stderr syncBuffer
	args := append([]string{"--id", "edge-0", "--key", keyFile, "--listen", freePort(t)}, tlsArgs...)
	if err := runEdgeFor(5*time.Second, args, &stderr); !errors.Is(err, errStillRunning) {
		t.Errorf("the listed edge: tally edge = %v, want it serving\nstderr:\n%s", err, stderr.String())
	}
}
