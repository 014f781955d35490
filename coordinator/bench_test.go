package coordinator

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"gopkg.in/yaml.v3"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/client"
	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/edge"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/model"
)

// The benchmarks of this file measure whole rounds through the real
// coordinator and clients over loopback gRPC, with the default (secure,
// LogN 14) CKKS parameters: what a deployment pays for secure aggregation,
// not what one primitive costs (package aggregation benchmarks those).
// Local training is kept to one batch of benchRows rows per client so the
// figures are about the round's protocol, not about gradient descent.
const benchRows = 16

// coordProfile, when set, makes every coordinator that runCoordinator
// starts as a child process write a CPU and a heap profile into that
// directory, named by the number of clients, so that the coordinator's
// own work can be read apart from the clients' (which -cpuprofile would
// mix in): go test -bench BenchmarkScale -coordprofile /tmp/p ./coordinator.
var coordProfile = flag.String("coordprofile", "", "directory for CPU and heap profiles of the child coordinators")

// mlpFor returns an MLP spec for the digits dataset (64 features, 10
// classes) with one hidden layer sized so that the model has about
// params parameters: 64h + h + 10h + 10 = 75h + 10.
func mlpFor(b *testing.B, params int) (model.Spec, int) {
	b.Helper()
	spec := model.Spec{Kind: model.KindMLP, Hidden: []int{(params - 10) / 75}}
	n, err := model.NumParamsFor(spec, 64, 10)
	if err != nil {
		b.Fatal(err)
	}
	return spec, n
}

// benchFederation deals digits out to n clients and keeps benchRows rows
// of each shard: every client trains on one batch, whatever n is.
func benchFederation(b *testing.B, n int) (*dataset.Dataset, *dataset.Federation) {
	b.Helper()
	ds, err := dataset.Embedded("digits")
	if err != nil {
		b.Fatal(err)
	}
	fed, err := dataset.Federate(ds, dataset.FederationSpec{Clients: n, ValFrac: 0.2, TestFrac: 0.2, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	idx := make([]int, benchRows)
	for i := range idx {
		idx[i] = i
	}
	for i, c := range fed.Clients {
		if c.Len() > benchRows {
			fed.Clients[i] = c.Subset(idx)
		}
	}
	return ds, fed
}

// benchJob is a job of n clients, every one of them needed in each round,
// with deadlines long enough that no round closes early on a loaded
// 2-core machine. Both modes value contributions the same way, with the
// influence mode (one scalar per client, the default under he): the
// default without encryption, exact Shapley on whole models, evaluates
// 2^n coalitions of the 1M-parameter model and would measure valuation,
// not aggregation (186 s against 4.5 s for the he round, measured).
func benchJob(spec model.Spec, n, rounds int, secure string) engine.JobConfig {
	cfg := engine.JobConfig{
		ID: "bench", Seed: 1, Rounds: rounds,
		Model:        spec,
		Train:        model.TrainConfig{Epochs: 1, BatchSize: benchRows, LearningRate: 0.01},
		Data:         engine.DataConfig{Features: 64, Classes: 10},
		RoundTimeout: engine.Duration(5 * time.Minute), Tick: engine.Duration(10 * time.Millisecond),
		Clients:           engine.ClientsConfig{Min: n, WaitFor: n, Liveness: engine.Duration(5 * time.Minute)},
		Scaling:           engine.ScalingConfig{Mode: "none"},
		SecureAggregation: secure,
		Valuation:         engine.ValuationConfig{Mode: engine.ModeInfluence},
	}
	for i := range n {
		cfg.Clients.Enrolment = append(cfg.Clients.Enrolment, engine.EnrolmentConfig{ID: fmt.Sprintf("c%03d", i), Token: fmt.Sprintf("bench-token-%03d", i)})
	}
	return cfg
}

// runClients starts one client per shard, each on its own connection as
// separate data holders would be, and returns a function that waits for
// them all. The clients long-poll as deployed ones do (client.Config's
// default PollWait): a poll is answered as soon as a task selects its
// client, so a longer wait costs no latency, only fewer idle polls. They
// used to poll every second, which under load made authenticating idle
// polls most of the coordinator's CPU (BENCHMARKS.md, issue 19).
func runClients(ctx context.Context, b *testing.B, addrs []string, job engine.JobConfig, shards []model.Examples, shared *client.Shared) func() {
	b.Helper()
	var wg sync.WaitGroup
	var conns []*grpc.ClientConn
	for i, data := range shards {
		conn, err := grpc.NewClient(addrs[i%len(addrs)], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, conn)
		c, err := client.New(client.Config{Conn: conn, Token: job.Clients.Enrolment[i].Token, Data: data, Shared: shared, TestOnlyWeakParameters: true})
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Run(ctx); err != nil && ctx.Err() == nil {
				b.Errorf("client %d: %v", i, err)
			}
		}()
	}
	return func() {
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
	}
}

// roundResult is what one in-process job of two rounds measured.
type roundResult struct {
	round time.Duration // from the start of round 2 to its completion
	cpu   time.Duration // this process's CPU time (user and system) over the same interval
	bytes int64         // ciphertext bytes the coordinator received in round 2 (he only)
}

// processCPU is this process's CPU time so far, user and system, all
// threads: in BenchmarkRound, every party's (coordinator, clients,
// committee members).
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// timeRound runs a two-round job in-process and times its second round.
// The engine opens round r+1 in the same step that completes round r, so
// the interval between the two OnRound callbacks is one whole round:
// publish, model download, local training, encryption, upload and
// accumulation, committee decryption (he) and evaluation. Round 1 is left
// out because it also pays one-off costs (fetching the collective key).
func timeRound(b *testing.B, spec model.Spec, fed *dataset.Federation, secure string) roundResult {
	b.Helper()
	n := len(fed.Clients)
	job, err := engine.NewJob(benchJob(spec, n, 2, secure), ".")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var done []time.Time
	var cpus []time.Duration
	var recs []engine.RoundRecord
	srv, err := NewServer(ServerConfig{Job: job, Validation: fed.Validation, Linger: 5 * time.Second, OnRound: func(r engine.RoundRecord) {
		// Called on the driver goroutine, which is Run's caller.
		done, cpus, recs = append(done, time.Now()), append(cpus, processCPU(b)), append(recs, r)
	}})
	if err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	wait := runClients(ctx, b, []string{lis.Addr().String()}, job.JobConfig, fed.Clients, nil)
	out, err := srv.Run(ctx, lis)
	cancel()
	wait()
	if err != nil {
		b.Fatal(err)
	}
	if out.Done == nil || out.Done.FinalRound != 2 || len(recs) != 2 {
		b.Fatalf("%s: job did not complete 2 rounds: done %+v, %d records", secure, out.Done, len(recs))
	}
	for _, r := range recs {
		if r.Failed || len(r.Contributors) != n {
			b.Fatalf("%s: round %d: failed=%v (%s), %d of %d contributors", secure, r.Round, r.Failed, r.Reason, len(r.Contributors), n)
		}
	}
	return roundResult{round: done[1].Sub(done[0]), cpu: cpus[1] - cpus[0], bytes: recs[1].BytesReceived}
}

// BenchmarkRound times one round of 10 clients and a model of 1M
// parameters with secure aggregation (multiparty CKKS, default LogN 14
// parameters, committee of 5, threshold 3) and the same round with
// updates in the clear, in the same run, and reports the ratio. All
// clients and the coordinator share this machine's cores, so the he round
// includes 10 clients' encryption done on the cores the coordinator uses:
// on separate machines the clients would encrypt in parallel.
func BenchmarkRound(b *testing.B) {
	const clients, params = 10, 1_000_000
	spec, n := mlpFor(b, params)
	_, fed := benchFederation(b, clients)
	b.Run(fmt.Sprintf("clients=%d/params=1e6", clients), func(b *testing.B) {
		var he, none roundResult
		for b.Loop() {
			none = timeRound(b, spec, fed, "none")
			he = timeRound(b, spec, fed, "he")
		}
		b.ReportMetric(float64(n), "params")
		b.ReportMetric(he.round.Seconds(), "he_s")
		b.ReportMetric(none.round.Seconds(), "none_s")
		b.ReportMetric(he.round.Seconds()/none.round.Seconds(), "he_over_none")
		// The CPU every party spent in the round, he over none: what
		// the round costs in all, less sensitive than wall time to what
		// else shares this machine, and what wall time would follow on
		// one machine if the round kept both cores busy.
		b.ReportMetric(he.cpu.Seconds()/none.cpu.Seconds(), "he_cpu_over_none")
		// The plaintext path does not count its bytes (RoundRecord.BytesReceived
		// is filled for ckks submissions only), so only he's are reported.
		b.ReportMetric(float64(he.bytes)/float64(clients*n), "he_bytes/param")
	})
}

// buildTally compiles cmd/tally into dir, so that the coordinator runs as
// a process of its own and its memory is measured apart from the clients'.
func buildTally(b *testing.B, dir string) string {
	b.Helper()
	bin := filepath.Join(dir, "tally")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/tallyfl/tally/cmd/tally")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build cmd/tally: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(b *testing.B) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// coordRun is what one coordinator process's run measured.
type coordRun struct {
	peakMiB float64
	wall    time.Duration
	// rounds marks each "round completed" line the coordinator logged:
	// when it was read, and the process's CPU time then.
	rounds []roundMark
	// cpu is the process's whole CPU time (user and system) from wait4.
	cpu time.Duration
	// partials, summed and relayed add up the edges' counters (edge.Edge)
	// when the job ran through edges; edgeHeldMiB the most each edge held
	// of its clients' uploads at once (edge.Edge.PeakHeld), added up.
	partials, summed, relayed int64
	edgeHeldMiB               float64
	// benchPeakMiB is this process's own peak resident set size over the
	// run (VmHWM, reset before it): the clients, and the edges if any.
	// -1 when the high-water mark could not be reset.
	benchPeakMiB float64
}

type roundMark struct {
	at  time.Time
	cpu time.Duration
}

// round returns the wall and coordinator CPU time of round r (from 1),
// measured from the completion of round r−1 to its own: the engine opens
// round r in the step that completes round r−1.
func (c coordRun) round(b *testing.B, r int) (wall, cpu time.Duration) {
	b.Helper()
	if r < 2 || len(c.rounds) < r {
		b.Fatalf("round %d of %d marks: round 1 has no start mark", r, len(c.rounds))
	}
	prev, cur := c.rounds[r-2], c.rounds[r-1]
	return cur.at.Sub(prev.at), cur.cpu - prev.cpu
}

// coordinatorPeak runs cfg with n in-process clients against `tally
// coordinator` as a child process (see runCoordinator).
func coordinatorPeak(b *testing.B, bin string, ds *dataset.Dataset, spec model.Spec, n, rounds int, mode string) coordRun {
	b.Helper()
	_, fed := benchFederation(b, n)
	cfg := benchJob(spec, n, rounds, "he")
	cfg.Valuation.Mode = mode
	return runCoordinator(b, bin, ds, cfg, fed, nil, 5*time.Minute)
}

// runCoordinator writes the job file of cfg and the validation CSV, runs
// `tally coordinator` as a child process, drives it with one in-process
// client per shard of fed, and returns the child's peak resident set
// size, VmHWM in /proc/PID/status, and its CPU time at each completed
// round. VmHWM is a high-water mark, so reading it every few milliseconds
// until the process exits misses only what happens after the last
// reading: the job-done notices and shutdown, after every round. The
// child's ru_maxrss from wait4 would be simpler but is wrong here: Linux
// carries the parent's high-water mark across the vfork+exec that os/exec
// uses, so it reports this (large) benchmark process's peak instead. Its
// CPU times from wait4 are its own.
func runCoordinator(b *testing.B, bin string, ds *dataset.Dataset, cfg engine.JobConfig, fed *dataset.Federation, shared *client.Shared, timeout time.Duration) coordRun {
	b.Helper()
	return runCoordinatorEdges(b, bin, ds, cfg, fed, shared, timeout, 0)
}

// benchEdges are in-process edge aggregators (package edge) in front of a
// child coordinator: each a gRPC server on loopback, relaying to addr
// under a key the job lists.
type benchEdges struct {
	servers []*grpc.Server
	conns   []*grpc.ClientConn
	edges   []*edge.Edge
	addrs   []string
	wg      sync.WaitGroup
}

// listEdges draws n edge keys and lists them in cfg; start serves them.
func listEdges(b *testing.B, n int, cfg *engine.JobConfig) []ed25519.PrivateKey {
	b.Helper()
	var keys []ed25519.PrivateKey
	for i := range n {
		pub, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		keys = append(keys, key)
		cfg.Edges = append(cfg.Edges, engine.EdgeConfig{ID: fmt.Sprintf("edge-%d", i), PublicKey: hex.EncodeToString(pub)})
	}
	return keys
}

func startEdges(b *testing.B, cfg engine.JobConfig, keys []ed25519.PrivateKey, addr string) *benchEdges {
	b.Helper()
	be := &benchEdges{}
	for i, key := range keys {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		be.conns = append(be.conns, conn)
		e, gs, lis := newEdgeServer(b, edge.Config{Upstream: conn, ID: cfg.Edges[i].ID, Key: key, Job: cfg.ID, Log: slog.New(slog.DiscardHandler)})
		be.servers, be.edges, be.addrs = append(be.servers, gs), append(be.edges, e), append(be.addrs, lis.Addr().String())
		be.wg.Add(1)
		go func() {
			defer be.wg.Done()
			_ = gs.Serve(lis)
		}()
	}
	return be
}

func (be *benchEdges) close() {
	for _, gs := range be.servers {
		gs.Stop()
	}
	be.wg.Wait()
	for _, c := range be.conns {
		c.Close()
	}
}

// runCoordinatorEdges is runCoordinator with edges in-process edge
// aggregators between the clients and the coordinator (none when 0):
// client i joins edge i mod edges.
func runCoordinatorEdges(b *testing.B, bin string, ds *dataset.Dataset, cfg engine.JobConfig, fed *dataset.Federation, shared *client.Shared, timeout time.Duration, edges int) coordRun {
	b.Helper()
	keys := listEdges(b, edges, &cfg)
	n, rounds := len(fed.Clients), cfg.Rounds
	dir := b.TempDir()
	addr := freeAddr(b)
	cfg.Listen = addr
	// Classes is not in the job file (yaml:"-"): a file names the
	// classes, and NewJob counts them.
	if len(cfg.Data.ClassNames) == 0 {
		cfg.Data.ClassNames = engine.NumberedClasses(cfg.Data.Classes)
	}
	cfg.Data.Validation = engine.SourceConfig{CSV: "validation.csv"}
	f, err := os.Create(filepath.Join(dir, "validation.csv"))
	if err != nil {
		b.Fatal(err)
	}
	if err := dataset.WriteCSV(f, &dataset.Dataset{Name: "validation", FeatureNames: ds.FeatureNames, ClassNames: ds.ClassNames, Examples: fed.Validation}); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	y, err := yaml.Marshal(cfg)
	if err != nil {
		b.Fatal(err)
	}
	jobFile := filepath.Join(dir, "job.yaml")
	if err := os.WriteFile(jobFile, y, 0o644); err != nil {
		b.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// This process's own peak is measured from here: writing 5 to
	// clear_refs resets its VmHWM to the current RSS (Linux 4.0 and
	// later), so that an earlier, larger run of the same benchmark does
	// not count; the heap that run left is returned to the system first,
	// or the reset would start from it (measured: 5.4 GB left by the
	// 200-client direct job before its edge variant).
	debug.FreeOSMemory()
	selfReset := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
	start := time.Now()
	var stdout bytes.Buffer
	// Loopback, and clients in this process that speak plaintext; no
	// metrics endpoint, whose fixed port benchmarks run at once would share.
	args := []string{"coordinator", "--config", jobFile, "--insecure-plaintext", "--metrics-addr", ""}
	if *coordProfile != "" {
		name := fmt.Sprintf("coord-%s-clients=%d", strings.ReplaceAll(b.Name(), "/", "_"), n)
		args = append(args, "--cpuprofile", filepath.Join(*coordProfile, name+".cpu"), "--memprofile", filepath.Join(*coordProfile, name+".mem"))
	}
	coord := exec.CommandContext(ctx, bin, args...)
	coord.Stdout = &stdout
	logs, err := coord.StderrPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := coord.Start(); err != nil {
		b.Fatal(err)
	}
	pid := coord.Process.Pid
	status := fmt.Sprintf("/proc/%d/status", pid)
	var hwmKiB int64
	stop := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			if v, ok := readHWM(status); ok {
				hwmKiB = max(hwmKiB, v)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	// The coordinator logs JSON lines to a pipe; each completed round is
	// marked as its line is read, with the process's CPU time then. The
	// pipe must be drained to the end, or the child blocks writing to it.
	var marks []roundMark
	var tailLog []string
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(logs)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if strings.Contains(line, `"msg":"round completed"`) {
				cpu, _ := readCPU(pid)
				marks = append(marks, roundMark{at: time.Now(), cpu: cpu})
			}
			if tailLog = append(tailLog, line); len(tailLog) > 20 {
				tailLog = tailLog[1:]
			}
		}
	}()
	var be *benchEdges
	joins := []string{addr}
	if edges > 0 {
		be = startEdges(b, cfg, keys, addr)
		defer be.close()
		joins = be.addrs
	}
	wait := runClients(ctx, b, joins, cfg, fed.Clients, shared)
	<-scanned
	werr := coord.Wait()
	close(stop)
	<-polled
	wall := time.Since(start)
	cancel()
	wait()
	if werr != nil {
		b.Fatalf("coordinator with %d clients: %v\n%s", n, werr, strings.Join(tailLog, "\n"))
	}
	if want := fmt.Sprintf("done after round %d", rounds); !strings.Contains(stdout.String(), want) {
		b.Fatalf("coordinator with %d clients did not finish %d rounds:\n%s\n%s", n, rounds, stdout.String(), strings.Join(tailLog, "\n"))
	}
	if hwmKiB == 0 {
		b.Fatalf("never read VmHWM from %s", status)
	}
	if len(marks) != rounds {
		b.Fatalf("coordinator with %d clients logged %d completed rounds, want %d", n, len(marks), rounds)
	}
	ps := coord.ProcessState
	run := coordRun{peakMiB: float64(hwmKiB) / 1024, wall: wall, rounds: marks, cpu: ps.UserTime() + ps.SystemTime(), benchPeakMiB: -1}
	if v, ok := readHWM("/proc/self/status"); ok && selfReset {
		run.benchPeakMiB = float64(v) / 1024
	}
	if be != nil {
		for _, e := range be.edges {
			run.partials += e.Partials.Load()
			run.summed += e.Summed.Load()
			run.relayed += e.Relayed.Load()
			run.edgeHeldMiB += float64(e.PeakHeld()) / (1 << 20)
		}
		if run.summed == 0 {
			b.Fatalf("%d edges summed no upload (partials %d, relayed %d): the clients' updates did not go through them", edges, run.partials, run.relayed)
		}
	}
	return run
}

// clockTick is the unit of utime and stime in /proc/PID/stat: USER_HZ,
// which Linux fixes at 100 for user space on every architecture Go runs on.
const clockTick = 10 * time.Millisecond

// readCPU returns the user plus system CPU time of process pid so far,
// from /proc/PID/stat (fields 14 and 15, counted after the command name,
// which is in parentheses and may contain spaces).
func readCPU(pid int) (time.Duration, bool) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3, the state
	if len(f) < 13 {
		return 0, false
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(ut+st) * clockTick, true
}

// readHWM returns VmHWM in KiB from a /proc/PID/status file; ok is false
// once the process has exited (a zombie has no memory map to report).
func readHWM(path string) (int64, bool) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, found := strings.CutPrefix(line, "VmHWM:"); found {
			f := strings.Fields(rest) // "12345 kB"
			if len(f) == 2 && f[1] == "kB" {
				v, err := strconv.ParseInt(f[0], 10, 64)
				return v, err == nil
			}
		}
	}
	return 0, false
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// BenchmarkPeakMemory measures the coordinator's peak memory over a whole
// secure job (key generation, one round, decryption) with 10 and with 100
// clients of a 100k-parameter model, in the same run, and reports the
// ratio. The coordinator adds each ciphertext to its block's running sum
// as it arrives, reads at most DefaultUploadSlots upload messages at once
// and sends the model and key in small pieces, so the number of clients
// should barely move the peak; issue 3 asks for a ratio of at most 1.5.
// What still grows with clients is the influence valuation the job uses:
// one running ciphertext per client (512 KiB), then its marshalled form
// for the members, about 1 MiB per client at the peak, and the Go heap's
// headroom (GOGC=100) doubles it in RSS. Measured on this 2-core machine:
// 151/259 MiB, ratio 1.7; with GOMEMLIMIT=96MiB in the environment (which
// the child inherits) 114/147 MiB, ratio 1.3, at the price of more GC.
// Members' verification (issue 14) then added every client's c₁, 1.6 MB
// each, kept until the round's decryptions are done (ratio 3.4–3.7,
// issue 19 asks for 1.3); they are now in a spill file off the heap
// (spill.go: ratio 1.8–2.1), and the influence ciphertexts were what grew:
// a heap profile at the 100-client peak had 76 MB of running influence
// ciphertexts, one per client mid-upload. They are in the same file now,
// at most 8 in memory (aggregation.Influence.SpillTo): 179/361 MiB,
// ratio 2.0, became 178–184/231–242 MiB, ratio 1.30–1.33 (three runs);
// what still grows is mostly gRPC's receive buffers for 100 concurrent
// uploads (11 MB live at the peak) and the garbage of the decoded upload
// messages (GOGC headroom), which valuation=off has too (122/149 MiB,
// ratio 1.22, on the same machine). That garbage is what GC headroom
// doubles: under GODEBUG=gctrace=1 the live heap after each collection
// was 67–77 MB at 10 clients and 84–88 MB at 100, the heap before one
// 133 and 177 MB. tally coordinator now runs at GOGC 50 by default
// (--gc-percent; procs.go, coordinatorGCPercent): 152–161/180–182 MiB,
// ratio 1.12–1.19, against 180–184/226–236 MiB, 1.26–1.29, at GOGC 100
// in alternated runs, with coordinator CPU time (coord_cpu_s_100)
// 4.49–4.73 s against 4.41–4.66 s (2026-12-03, GOGC set in the
// environment for both); with the built-in default, alternated with
// GOGC=100 at load 3–5: ratio 1.134 and 1.140 against 1.305 and 1.344,
// CPU 4.85 and 5.06 s against 5.79 and 5.22 s.
// The coordinator is a separate process so that the clients' models and
// ciphertexts, which live in this process, are not counted.
func BenchmarkPeakMemory(b *testing.B) {
	const params, rounds = 100_000, 1
	spec, n := mlpFor(b, params)
	ds, _ := benchFederation(b, 1)
	bin := buildTally(b, b.TempDir())
	// valuation=off isolates what issue 3 asks about, the streaming
	// aggregation; valuation=influence adds the per-client scalars.
	for _, mode := range []string{engine.ModeOff, engine.ModeInfluence} {
		b.Run("params=1e5/clients=10vs100/valuation="+mode, func(b *testing.B) {
			var p10, p100 coordRun
			for b.Loop() {
				p10 = coordinatorPeak(b, bin, ds, spec, 10, rounds, mode)
				p100 = coordinatorPeak(b, bin, ds, spec, 100, rounds, mode)
			}
			b.ReportMetric(float64(n), "params")
			b.ReportMetric(p10.peakMiB, "peak_MiB_10")
			b.ReportMetric(p100.peakMiB, "peak_MiB_100")
			b.ReportMetric(p100.peakMiB/p10.peakMiB, "ratio")
			b.ReportMetric(p10.wall.Seconds(), "job_s_10")
			b.ReportMetric(p100.wall.Seconds(), "job_s_100")
			// The coordinator's own CPU over the job (user and system), so
			// that what a memory setting costs in CPU shows beside it.
			b.ReportMetric(p10.cpu.Seconds(), "coord_cpu_s_10")
			b.ReportMetric(p100.cpu.Seconds(), "coord_cpu_s_100")
		})
	}
}

// BenchmarkScale runs a secure job of 100 and one of 1,000 clients with a
// 100k-parameter model, in the same run, against `tally coordinator` as a
// process of its own, and reports round 2 of each: its wall time, the
// coordinator's CPU time per client in it, the coordinator's peak memory
// over the whole job, and the ratio of the two round times (issue 7's goal
// is at most 11: linear in clients). Both jobs use a committee of 16 with
// threshold 11, so that the ratio measures the clients alone, and the
// default valuation above 63 players, influence mode with the influence
// method: one decryption per client per round. The clients share this
// process (client.Shared), each on its own connection; every one of them
// encrypts on the 2 cores the coordinator also uses, so the round time is
// mostly theirs, while the coordinator's CPU per client is its own.
// digits gives the 1,000 clients one training row each and the 100 ten;
// each trains one batch either way.
//
// The edge variant (issue 18) runs the 1,000 clients through 4 keyless
// edge aggregators (package edge, in this process, so their CPU is not the
// coordinator's) and reports its round time and coordinator CPU per client
// as ratios to the direct job of the same run. Every variant reports
// bench_peak_MiB, this process's own peak over the job (the clients, and
// in the edge variant the edges, whose memory the coordinator's peak_MiB
// does not include); the edge variant also edge_held_peak_MiB, the most
// the edges held of their clients' uploads at once (edge.Edge.PeakHeld,
// added up over the edges), and its partials.
func BenchmarkScale(b *testing.B) {
	const params, rounds = 100_000, 2
	// The clients in this process are not what is measured (the
	// coordinator is a child process, with no limit): a soft memory limit
	// of half the machine's memory keeps 1,000 clients' garbage from
	// taking the rest of it. Without one the process grew past 17 GB
	// during the direct 1,000-client job on a 23 GiB machine (2026-12-03).
	if os.Getenv("GOMEMLIMIT") == "" {
		if total := memTotal(); total > 0 {
			defer debug.SetMemoryLimit(debug.SetMemoryLimit(total / 2))
		}
	}
	spec, nParams := mlpFor(b, params)
	ds, _ := benchFederation(b, 1)
	bin := buildTally(b, b.TempDir())
	runs := map[string]coordRun{}
	scale := func(n, edges int) coordRun {
		_, fed := benchFederation(b, n)
		cfg := benchJob(spec, n, rounds, "he")
		cfg.Valuation.Mode = ""
		cfg.Committee = engine.CommitteeConfig{Size: 16, Threshold: 11}
		// The default flooding bound covers committees of up to 12
		// (aggregation.DefaultFlooding); a committee of 16 needs its own.
		he := aggregation.DefaultConfig()
		he.Flooding.Committee = 16
		cfg.HEParams = &he
		// A 1,000-client round takes minutes on 2 shared cores; no task
		// may close on its deadline.
		cfg.RoundTimeout, cfg.Clients.Liveness = engine.Duration(30*time.Minute), engine.Duration(30*time.Minute)
		return runCoordinatorEdges(b, bin, ds, cfg, fed, client.NewShared(0), time.Hour, edges)
	}
	small, large := *scaleSmall, *scaleLarge
	cases := []struct{ n, edges int }{{small, 0}, {large, 0}, {large, *scaleEdges}}
	if !*scaleDirect {
		cases = cases[2:]
	}
	for _, c := range cases {
		name := fmt.Sprintf("clients=%d/params=1e5/committee=16/t=11", c.n)
		if c.edges > 0 {
			name += fmt.Sprintf("/edges=%d", c.edges)
		}
		b.Run(name, func(b *testing.B) {
			var r coordRun
			for b.Loop() {
				r = scale(c.n, c.edges)
			}
			key := fmt.Sprintf("%d/%d", c.n, c.edges)
			runs[key] = r
			wall, cpu := r.round(b, 2)
			b.ReportMetric(float64(nParams), "params")
			b.ReportMetric(wall.Seconds(), "round_s")
			b.ReportMetric(cpu.Seconds()/float64(c.n)*1000, "coord_cpu_ms/client")
			b.ReportMetric(r.cpu.Seconds()/float64(c.n)*1000, "job_coord_cpu_ms/client")
			b.ReportMetric(r.peakMiB, "peak_MiB")
			// The benchmark's own process: the clients, and the edges
			// (their memory, not the coordinator's) in the edge variant.
			if r.benchPeakMiB >= 0 {
				b.ReportMetric(r.benchPeakMiB, "bench_peak_MiB")
			}
			b.ReportMetric(r.wall.Seconds(), "job_s")
			if s, ok := runs[fmt.Sprintf("%d/0", small)]; ok && c.n == large && c.edges == 0 {
				ws, _ := s.round(b, 2)
				b.ReportMetric(wall.Seconds()/ws.Seconds(), fmt.Sprintf("round_ratio_%d/%d", large, small))
			}
			if c.edges > 0 {
				b.ReportMetric(float64(r.summed), "edge_summed_uploads")
				b.ReportMetric(float64(r.relayed), "edge_relayed_uploads")
				b.ReportMetric(float64(r.partials), "edge_partials")
				b.ReportMetric(r.edgeHeldMiB, "edge_held_peak_MiB")
				// Against the direct job of as many clients in this run: the
				// ratios issue 18 asks for (coordinator CPU per client ≤ 1/5).
				if d, ok := runs[fmt.Sprintf("%d/0", c.n)]; ok {
					dw, dc := d.round(b, 2)
					b.ReportMetric(wall.Seconds()/dw.Seconds(), "round_ratio_edges/direct")
					b.ReportMetric(cpu.Seconds()/dc.Seconds(), "coord_cpu_ratio_edges/direct")
				}
			}
		})
	}
}

// memTotal is the machine's memory in bytes (/proc/meminfo), 0 if unknown.
func memTotal() int64 {
	raw, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		var kb int64
		if n, _ := fmt.Sscanf(line, "MemTotal: %d kB", &kb); n == 1 {
			return kb << 10
		}
	}
	return 0
}

// The sizes BenchmarkScale compares: make bench runs the defaults; a
// quicker look at the same code: -scale.small 20 -scale.large 100.
var (
	// Below 64 clients a job's default valuation is projection with a
	// coalition game (engine's sampledBound), not influence: a much
	// heavier coordinator (at 50 clients it ran for over 10 minutes).
	scaleSmall  = flag.Int("scale.small", 100, "BenchmarkScale: clients of the small job (below 64 the default valuation is projection, not influence: another benchmark)")
	scaleLarge  = flag.Int("scale.large", 1000, "BenchmarkScale: clients of the large job, direct and through edges (below 64 the default valuation is projection, not influence)")
	scaleEdges  = flag.Int("scale.edges", 4, "BenchmarkScale: edges of the large job's edge variant")
	scaleDirect = flag.Bool("scale.direct", true, "BenchmarkScale: run the direct jobs too (false: the edge variant alone, for a quick look at an edge change; no ratios then)")
)
