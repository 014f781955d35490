package coordinator

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"gopkg.in/yaml.v3"

	"github.com/tallyfl/tally/client"
	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/model"
)

// The benchmarks of this file measure whole rounds through the real
// coordinator and clients over loopback gRPC, with the default (secure,
// LogN 14) CKKS parameters: what a deployment pays for secure aggregation,
// not what one primitive costs (package aggregation benchmarks those).
// Local training is kept to one batch of benchRows rows per client so the
// figures are about the round's protocol, not about gradient descent.
const benchRows = 16

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
func benchJob(spec model.Spec, n, rounds int, secure string) JobConfig {
	cfg := JobConfig{
		ID: "bench", Seed: 1, Rounds: rounds,
		Model:        spec,
		Train:        model.TrainConfig{Epochs: 1, BatchSize: benchRows, LearningRate: 0.01},
		Data:         DataConfig{Features: 64, Classes: 10},
		RoundTimeout: Duration(5 * time.Minute), Tick: Duration(10 * time.Millisecond),
		Clients:           ClientsConfig{Min: n, WaitFor: n, Liveness: Duration(5 * time.Minute)},
		Scaling:           ScalingConfig{Mode: "none"},
		SecureAggregation: secure,
		Valuation:         ValuationConfig{Mode: ModeInfluence},
	}
	for i := range n {
		cfg.Clients.Enrolment = append(cfg.Clients.Enrolment, EnrolmentConfig{ID: fmt.Sprintf("c%03d", i), Token: fmt.Sprintf("bench-token-%03d", i)})
	}
	return cfg
}

// runClients starts one client per shard, each on its own connection as
// separate data holders would be, and returns a function that waits for
// them all.
func runClients(ctx context.Context, b *testing.B, addr string, job JobConfig, shards []model.Examples) func() {
	b.Helper()
	var wg sync.WaitGroup
	var conns []*grpc.ClientConn
	for i, data := range shards {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, conn)
		c, err := client.New(client.Config{Conn: conn, Token: job.Clients.Enrolment[i].Token, Data: data, PollWait: time.Second})
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
	bytes int64         // ciphertext bytes the coordinator received in round 2 (he only)
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
	job, err := NewJob(benchJob(spec, n, 2, secure), ".")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var done []time.Time
	var recs []RoundRecord
	srv, err := NewServer(ServerConfig{Job: job, Validation: fed.Validation, Linger: 5 * time.Second, OnRound: func(r RoundRecord) {
		// Called on the driver goroutine, which is Run's caller.
		done, recs = append(done, time.Now()), append(recs, r)
	}})
	if err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	wait := runClients(ctx, b, lis.Addr().String(), job.JobConfig, fed.Clients)
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
	return roundResult{round: done[1].Sub(done[0]), bytes: recs[1].BytesReceived}
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

// peakRun is one coordinator process's run.
type peakRun struct {
	peakMiB float64
	wall    time.Duration
}

// coordinatorPeak writes a job file for n clients and the validation CSV,
// runs `tally coordinator` as a child process, drives it with n in-process
// clients, and returns the child's peak resident set size, VmHWM in
// /proc/PID/status. VmHWM is a high-water mark, so reading it every few
// milliseconds until the process exits misses only what happens after the
// last reading: the job-done notices and shutdown, after every round. The
// child's ru_maxrss from wait4 would be simpler but is wrong here: Linux
// carries the parent's high-water mark across the vfork+exec that os/exec
// uses, so it reports this (large) benchmark process's peak instead.
func coordinatorPeak(b *testing.B, bin string, ds *dataset.Dataset, spec model.Spec, n, rounds int, mode string) peakRun {
	b.Helper()
	_, fed := benchFederation(b, n)
	dir := b.TempDir()
	addr := freeAddr(b)
	cfg := benchJob(spec, n, rounds, "he")
	cfg.Valuation.Mode = mode
	cfg.Listen = addr
	cfg.Data.Validation = SourceConfig{CSV: "validation.csv"}
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

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	var stdout, stderr bytes.Buffer
	coord := exec.CommandContext(ctx, bin, "coordinator", "--config", jobFile)
	coord.Stdout, coord.Stderr = &stdout, &stderr
	if err := coord.Start(); err != nil {
		b.Fatal(err)
	}
	status := fmt.Sprintf("/proc/%d/status", coord.Process.Pid)
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
	wait := runClients(ctx, b, addr, cfg, fed.Clients)
	werr := coord.Wait()
	close(stop)
	<-polled
	wall := time.Since(start)
	cancel()
	wait()
	if werr != nil {
		b.Fatalf("coordinator with %d clients: %v\n%s", n, werr, tail(stderr.String(), 2000))
	}
	if want := fmt.Sprintf("done after round %d", rounds); !strings.Contains(stdout.String(), want) {
		b.Fatalf("coordinator with %d clients did not finish %d rounds:\n%s\n%s", n, rounds, stdout.String(), tail(stderr.String(), 2000))
	}
	if hwmKiB == 0 {
		b.Fatalf("never read VmHWM from %s", status)
	}
	return peakRun{peakMiB: float64(hwmKiB) / 1024, wall: wall}
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
// The coordinator is a separate process so that the clients' models and
// ciphertexts, which live in this process, are not counted.
func BenchmarkPeakMemory(b *testing.B) {
	const params, rounds = 100_000, 1
	spec, n := mlpFor(b, params)
	ds, _ := benchFederation(b, 1)
	bin := buildTally(b, b.TempDir())
	// valuation=off isolates what issue 3 asks about, the streaming
	// aggregation; valuation=influence adds the per-client scalars.
	for _, mode := range []string{ModeOff, ModeInfluence} {
		b.Run("params=1e5/clients=10vs100/valuation="+mode, func(b *testing.B) {
			var p10, p100 peakRun
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
		})
	}
}
