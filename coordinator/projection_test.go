package coordinator

import (
	"encoding/csv"
	"errors"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/valuation"
)

// TestProjectionHEMatchesClear: the projection mode under he values every
// round from the decrypted total and ScalarsPerRound coefficient
// decryptions per client, each against its own committed vector, and
// agrees with the same mode computed in the clear (secure_aggregation
// none) within the decryption's noise; the transcript, with its several
// vectors per round, verifies under the job's L (with L = 1, as `tally
// ledger verify` held every job to before, it does not).
func TestProjectionHEMatchesClear(t *testing.T) {
	clear, _ := runSmallJob(t, "none", engine.ModeProjection, "exact-shapley")
	// The he run's state file records the job's identity, as `tally
	// coordinator` writes it, which ledger verify reads L from.
	job, fed, _ := smallJob(t, "matrix", "he", engine.ModeProjection, "exact-shapley")
	store, err := OpenJobStore(filepath.Join(t.TempDir(), "job.db"), job, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	srv, err := NewServer(ServerConfig{Job: job, Validation: fed.Validation, Linger: 2 * time.Second, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	he := serveFederation(t, srv, job, fed.Clients, 200*time.Millisecond, nil)
	m := valuation.ProjectionVectorCount(2)
	for _, out := range []Outcome{clear, he} {
		if out.Done == nil || out.Done.FinalRound != 2 {
			t.Fatalf("job ended %+v", out.Done)
		}
	}
	for i, r := range he.History {
		c := clear.History[i]
		if r.Failed || c.Failed || r.Round != c.Round {
			t.Fatalf("round %d: failed he %v clear %v", r.Round, r.Failed, c.Failed)
		}
		if r.Valuation == nil || r.Valuation.Error != "" || c.Valuation == nil || c.Valuation.Error != "" {
			t.Fatalf("round %d valuation: he %+v, clear %+v", r.Round, r.Valuation, c.Valuation)
		}
		scale := 0.0
		for _, v := range c.Valuation.Values {
			scale = max(scale, math.Abs(v))
		}
		for id, want := range c.Valuation.Values {
			got, ok := r.Valuation.Values[id]
			if !ok || math.Abs(got-want) > 1e-3*scale+1e-6 {
				t.Errorf("round %d %s: he %v, clear %v", r.Round, id, got, want)
			}
		}
		vectors := map[string]bool{}
		scalars := map[string]int{}
		for _, d := range r.Decryptions {
			if d.Purpose == aggregation.PurposeInfluence {
				vectors[d.Gradient] = true
				scalars[d.Clients[0]]++
			}
		}
		if len(vectors) != m {
			t.Errorf("round %d: %d distinct vectors, want %d", r.Round, len(vectors), m)
		}
		for _, id := range r.Contributors {
			if scalars[id] != m {
				t.Errorf("round %d: %d scalars of %s decrypted, want %d", r.Round, scalars[id], id, m)
			}
		}
		t.Logf("round %d: he %v, clear %v", r.Round, r.Valuation.Values, c.Valuation.Values)
	}
	if err := engine.CheckDecryptions(3, he.History); err != nil {
		t.Error(err)
	}
	rep, err := VerifyTranscript(store.DB())
	if err != nil {
		t.Fatalf("ledger verify of the transcript: %v", err)
	}
	if want := 1 + 2*(1+5*m); rep.Entries != want {
		t.Errorf("transcript of %d entries, want %d (the scaling moments, then per round the total and %d scalars for each of 5 clients)", rep.Entries, want, m)
	}
}

// TestManifestScalars: a projection job declares its scalars per client
// and round; bound to a manifest whose L is smaller it is refused with
// engine.ErrScalars, and accepted once the manifest allows them.
func TestManifestScalars(t *testing.T) {
	p := newPinnedJob(t, nil)
	job := p.job
	job.Valuation.Mode, job.Valuation.Scalars = engine.ModeProjection, valuation.ProjectionVectorCount(2)
	if err := CheckManifest(job, p.m); !errors.Is(err, engine.ErrScalars) {
		t.Fatalf("CheckManifest of a job releasing 6 scalars under L = 1: %v, want %v", err, engine.ErrScalars)
	}
	m := *p.m
	m.Security.MaxScalarsPerClientRound = 6
	if err := CheckManifest(job, &m); err != nil {
		t.Fatalf("CheckManifest under L = 6: %v", err)
	}
}

// TestExportGamesRecomputesShapley: --export-games writes each round's
// game as CSV (bitmask,players,clients,utility), and exact Shapley values
// recomputed from the file alone, with nothing of tally's, are the
// round's values client by client.
func TestExportGamesRecomputesShapley(t *testing.T) {
	job, fed, store := smallJob(t, "export", "none", engine.ModeProjection, "exact-shapley")
	dir := t.TempDir()
	srv, err := NewServer(ServerConfig{Job: job, Validation: fed.Validation, Linger: 2 * time.Second, Store: store, ExportGames: dir})
	if err != nil {
		t.Fatal(err)
	}
	out := serveFederation(t, srv, job, fed.Clients, 200*time.Millisecond, nil)
	if out.Done == nil || out.Done.FinalRound != 2 {
		t.Fatalf("job ended %+v", out.Done)
	}
	f, err := os.Open(filepath.Join(dir, "round-001.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) < 2 || strings.Join(rows[0], ",") != "bitmask,players,clients,utility" {
		t.Fatalf("header %v of %d rows", rows[0], len(rows))
	}
	u := map[uint64]float64{}
	names := map[int]string{} // player → its client (no copies here)
	for _, r := range rows[1:] {
		mask, err := strconv.ParseUint(r[0], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		if u[mask], err = strconv.ParseFloat(r[3], 64); err != nil {
			t.Fatal(err)
		}
		if ps, cs := strings.Fields(r[1]), strings.Fields(r[2]); len(ps) == 1 && len(cs) == 1 {
			p, _ := strconv.Atoi(ps[0])
			names[p] = cs[0]
		}
	}
	n := len(names)
	if len(u) != 1<<n {
		t.Fatalf("%d coalitions for %d players, want every one of %d", len(u), n, 1<<n)
	}
	fact := func(k int) float64 {
		f := 1.0
		for i := 2; i <= k; i++ {
			f *= float64(i)
		}
		return f
	}
	values := out.History[0].Valuation.Values
	for i := range n {
		phi := 0.0
		for s := uint64(0); s < 1<<n; s++ {
			if s&(1<<i) != 0 {
				continue
			}
			k := bits.OnesCount64(s)
			phi += fact(k) * fact(n-k-1) / fact(n) * (u[s|1<<i] - u[s])
		}
		want := values[names[i]]
		if math.Abs(phi-want) > 1e-12*(1+math.Abs(want)) {
			t.Errorf("player %d (%s): Shapley from the CSV %v, the round's value %v", i, names[i], phi, want)
		}
	}
}
