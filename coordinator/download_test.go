package coordinator

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/model"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// namingStream records the name of every Download request it receives.
type namingStream struct {
	grpc.ServerStream
	names func(string)
}

func (s namingStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if r, ok := m.(*tallyv1.DownloadRequest); ok && err == nil {
		s.names(r.GetName())
	}
	return err
}

// openSpillFiles counts the files of dir this process holds open, by
// their descriptors' links in /proc/self/fd (a removed file's link reads
// "PATH (deleted)").
func openSpillFiles(t *testing.T, dir string) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, fd := range fds {
		if to, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && strings.HasPrefix(to, filepath.Join(dir, "tally-c1-")) {
			n++
		}
	}
	return n
}

// TestContributionDownloadCalls counts the Download calls committee
// members make for contributors' c1 in a secure job whose updates span
// several blocks. Each call costs the coordinator a signature check and a
// stream; fetched one block per call they were a third of its CPU per
// client in BenchmarkScale. A member must fetch a contributor's blocks in
// ⌈blocks/8⌉ calls, and the job must still verify and complete. The c1
// are served from the round's spill file, closed by the job's end.
func TestContributionDownloadCalls(t *testing.T) {
	ds, err := dataset.Embedded("breast-cancer")
	if err != nil {
		t.Fatal(err)
	}
	const n, rounds = 5, 3
	fed, err := dataset.Federate(ds, dataset.FederationSpec{Clients: n, ValFrac: 0.2, TestFrac: 0.2, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	// 30 features, 64 hidden, 2 classes: 2,114 parameters, 3 blocks of
	// the LogN 10 test parameters' 1,024 slots (the total weight takes a
	// slot after the last parameter).
	spec := model.Spec{Kind: model.KindMLP, Hidden: []int{64}}
	cfg := engine.JobConfig{
		ID: "downloads", Seed: 9, Rounds: rounds,
		Model:        spec,
		Data:         engine.DataConfig{Features: ds.Examples.Features, Classes: 2},
		RoundTimeout: engine.Duration(60 * time.Second), Tick: engine.Duration(20 * time.Millisecond),
		Clients:           engine.ClientsConfig{Min: n, WaitFor: n, Liveness: engine.Duration(60 * time.Second)},
		Scaling:           engine.ScalingConfig{Mode: "none"},
		SecureAggregation: "he",
		Committee:         engine.CommitteeConfig{Size: 3, Threshold: 2},
		HEParams:          insecureHE(),
		Valuation:         engine.ValuationConfig{Mode: engine.ModeInfluence},
	}
	for i := range n {
		cfg.Clients.Enrolment = append(cfg.Clients.Enrolment, engine.EnrolmentConfig{ID: fmt.Sprintf("c%d", i), Token: fmt.Sprintf("token-%d-downloads", i)})
	}
	job, err := engine.NewJob(cfg, ".")
	if err != nil {
		t.Fatal(err)
	}
	params, err := model.NumParamsFor(spec, ds.Examples.Features, 2)
	if err != nil {
		t.Fatal(err)
	}
	blocks := job.Params.Blocks(params)
	if blocks < 2 {
		t.Fatalf("the test needs updates of several blocks, has %d", blocks)
	}

	// The round's c1 are served from a spill file of this directory,
	// removed from it as soon as it is made (spillStores).
	spill := t.TempDir()
	spilled := 0 // the most spill files open during a download
	var mu sync.Mutex
	calls := map[string]int{} // "contribution/…" and "contributions/…" calls by contributor
	walks := map[string]int{} // of which those that start at block 0
	count := func(name string) {
		var rest string
		switch {
		case strings.HasPrefix(name, "contribution/"):
			rest = strings.TrimPrefix(name, "contribution/")
		case strings.HasPrefix(name, "contributions/"):
			rest = strings.TrimPrefix(name, "contributions/")
		default:
			return
		}
		who, at, _ := strings.Cut(rest, "/")
		open := openSpillFiles(t, spill)
		mu.Lock()
		spilled = max(spilled, open)
		calls[who]++
		// A verification fetches a contributor's blocks from block 0 on:
		// a request that starts there starts one.
		if at == "0" || strings.HasPrefix(at, "0/") {
			walks[who]++
		}
		mu.Unlock()
	}
	intercept := grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if info.FullMethod == tallyv1.CoordinatorService_Download_FullMethodName {
			ss = namingStream{ServerStream: ss, names: count}
		}
		return handler(srv, ss)
	})
	var recs []engine.RoundRecord
	srv, err := NewServer(ServerConfig{Job: job, Validation: fed.Validation, Linger: 2 * time.Second, GRPCOptions: []grpc.ServerOption{intercept},
		SpillDir: spill, OnRound: func(r engine.RoundRecord) { recs = append(recs, r) }})
	if err != nil {
		t.Fatal(err)
	}
	out := serveFederation(t, srv, job, fed.Clients, 100*time.Millisecond, nil)
	if out.Done == nil || out.Done.FinalRound != rounds {
		t.Fatalf("job did not complete %d rounds: %+v", rounds, out.Done)
	}
	for _, r := range recs {
		if r.Failed {
			t.Fatalf("round %d failed: %s", r.Round, r.Reason)
		}
	}
	perWalk := (blocks + 7) / 8
	mu.Lock()
	defer mu.Unlock()
	// The round's file, and for the hand-over the next round's: the engine
	// step that ends round r opens r+1's store before the driver performs
	// r's ActRoundDone, which closes r's, and a member's download can fall
	// in between (it did under the race detector once the influence
	// scalars were batched). Never more: no store outlives its round.
	if spilled < 1 || spilled > 2 {
		t.Errorf("members were served from %d open spill files at most, want the round's (and, at the hand-over, the next round's)", spilled)
	}
	if n := openSpillFiles(t, spill); n != 0 {
		t.Errorf("%d spill files still open after the job", n)
	}
	if entries, err := os.ReadDir(spill); err != nil || len(entries) != 0 {
		t.Errorf("the spill directory holds %d entries (%v), want none: a spill file is removed when it is made", len(entries), err)
	}
	if len(walks) != n {
		t.Errorf("members fetched the c1 of %d contributors, want %d: %v", len(walks), n, walks)
	}
	for c, k := range walks {
		// Retries re-verify, so the walks are counted rather than derived
		// from the rounds.
		if want := k * perWalk; calls[c] > want {
			t.Errorf("contributor %s: %d Download calls for its c1 in %d fetches of its %d blocks, want at most %d (⌈%d/8⌉ a fetch)",
				c, calls[c], k, blocks, want, blocks)
		}
	}
}
