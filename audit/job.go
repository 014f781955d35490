package audit

import (
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/model"
)

// Auditing a job's real releases (issue 21): a release log kept by the
// coordinator (releaselog.go) is matched, entry by entry, against the
// job's decryption transcript in its state file, and every release is
// attacked as the simulated releases are (Run): each round's decrypted
// sum of k updates and each group sum at the model the round started
// from, and each client's influence scalars over all the rounds. The
// truth the attacks are scored against is what the clients trained on:
// for a `tally simulate` job it is re-derived from the job's seed
// (dataset.Federate with the settings the log's header records), so the
// similarity metrics of a coordinator's log need the clients' data some
// other way (JobInput.Data).

// Finding is one disagreement between the release log and the transcript.
type Finding struct {
	// Seq is the transcript position concerned.
	Seq int
	// What names the release or entry and what is wrong.
	What string
}

// StatusUnknown is the status of a transcript entry no round record lists
// (the job stopped before a round completed after it).
const StatusUnknown = "unknown"

// CheckReleases matches releases against the transcript's entries, whose
// statuses (engine.StatusDecrypted or StatusFailed, from the round
// records) are in status. Every release must name an entry by its
// position and digest and agree with it on request, round, attempt,
// purpose and contributors; every entry that decrypted must have exactly
// one release. Each disagreement is one Finding, in transcript order.
func CheckReleases(entries []aggregation.TranscriptEntry, status map[int]string, releases []engine.Release) []Finding {
	var out []Finding
	by := map[int]int{}
	for i, r := range releases {
		name := fmt.Sprintf("release %d (transcript seq %d, round %d, %s, %d contributors)", i+1, r.Seq, r.Round, r.Purpose, len(r.Contributors))
		if r.Seq < 0 || r.Seq >= len(entries) {
			out = append(out, Finding{r.Seq, name + ": no transcript entry at that position"})
			continue
		}
		if _, dup := by[r.Seq]; dup {
			out = append(out, Finding{r.Seq, name + ": a second release of the same entry"})
			continue
		}
		by[r.Seq] = i
		e := entries[r.Seq]
		head := e.Head()
		var diff []string
		if hex.EncodeToString(head[:]) != r.Entry {
			diff = append(diff, "entry digest")
		}
		if hex.EncodeToString(e.Request[:]) != r.Request {
			diff = append(diff, "request")
		}
		if int(e.Round) != r.Round || int(e.Attempt) != r.Attempt {
			diff = append(diff, "round or attempt")
		}
		if e.Purpose != r.Purpose {
			diff = append(diff, "purpose")
		}
		if !slices.Equal(e.Contributors, r.Contributors) {
			diff = append(diff, "contributors")
		}
		if len(diff) > 0 {
			out = append(out, Finding{r.Seq, fmt.Sprintf("%s: does not match transcript entry %d (%v differ)", name, r.Seq, diff)})
			continue
		}
		if status[r.Seq] == engine.StatusFailed {
			out = append(out, Finding{r.Seq, name + ": the round records list this entry as failed, yet its plaintext was released"})
		}
	}
	for seq, e := range entries {
		if _, ok := by[seq]; ok || status[seq] != engine.StatusDecrypted {
			continue
		}
		out = append(out, Finding{seq, fmt.Sprintf("transcript entry %d (round %d, %s, %d contributors) was decrypted but the log has no release of it", seq, e.Round, e.Purpose, len(e.Contributors))})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out
}

// JobData is the truth behind a job: each client's rows as it trained on
// them (unscaled, corruptions applied), which clients sent no training
// (free riders: their rows are not in what they sent), and the
// coordinator's validation and test sets.
type JobData struct {
	Dataset    string
	Shards     map[string]model.Examples
	FreeRiders map[string]bool
	Validation model.Examples
	Test       model.Examples
}

// SimulationData re-derives a simulate job's data from its seed, as tally
// simulate dealt it (dataset.Federate).
func SimulationData(h ReleaseLogHeader) (*JobData, error) {
	s := h.Simulation
	if s == nil {
		return nil, fmt.Errorf("audit: the release log of job %s is not a simulation's: its clients' data cannot be re-derived", h.Job)
	}
	ds, err := dataset.Embedded(s.Dataset)
	if err != nil {
		return nil, err
	}
	spec := dataset.FederationSpec{Clients: len(s.Clients), Partition: dataset.PartitionSpec{Kind: s.Partition, Alpha: s.Alpha},
		ValFrac: s.ValFrac, TestFrac: s.TestFrac, Seed: h.Seed, Corruptions: map[int]dataset.Corruption{}}
	for i, c := range s.Corrupt {
		if spec.Corruptions[i], err = dataset.ParseCorruption(c); err != nil {
			return nil, err
		}
	}
	fed, err := dataset.Federate(ds, spec)
	if err != nil {
		return nil, err
	}
	d := &JobData{Dataset: s.Dataset, Shards: map[string]model.Examples{}, FreeRiders: map[string]bool{}, Validation: fed.Validation, Test: fed.Test}
	for i, id := range s.Clients {
		d.Shards[id] = fed.Clients[i]
		if fed.Corruptions[i].Kind == dataset.CorruptFreeRider {
			d.FreeRiders[id] = true
		}
	}
	return d, nil
}

// JobConfig sets the size of a job audit.
type JobConfig struct {
	// MatchIters is the Adam steps of gradient matching, run on the
	// releases of the first MatchRounds rounds (0: analytic attacks only).
	MatchIters, MatchRounds int
	// Seed draws the guesses and the gradient matching's starts.
	Seed uint64
	// Entries is the job's decryption transcript, from which each
	// projection scalar's committed vector digest is read.
	Entries []aggregation.TranscriptEntry
	// Vectors rebuilds a projection round's public vectors as the job's
	// valuer built them (engine.ProjectionValuer.ProjectionVectors) from
	// the round's model, the previous round's change and the decrypted
	// total; nil leaves a projection job's scalars unattacked.
	Vectors func(base, known, total []float64) ([][]float64, error)
}

// ClientResult is what the influence scalars gave away about one client.
type ClientResult struct {
	Client string
	// Release is "influence" or "projection": whose scalars these are.
	Release    string
	Rows       int
	Rounds     int     // rounds with a decrypted scalar
	Labels     float64 // share of its label multiset recovered
	LabelGuess float64
	AUC        float64
}

// JobResult is the audit of one job's releases.
type JobResult struct {
	Header   ReleaseLogHeader
	Findings []Finding
	// Matched counts the releases that agree with their entry; Entries
	// the transcript's length, Decrypted the entries listed decrypted.
	Releases, Matched, Entries, Decrypted int
	// Moments counts the feature-moment releases, which are not
	// attacked: they are the pooled sums over every client that become
	// the job's scaler, which the attacker uses.
	Moments int
	Rows    []Row
	Clients []ClientResult
}

// AuditJob attacks the releases of log that matched the transcript (the
// others are left out and reported in findings), scored against d; with d
// nil (the truth unknown) it only counts them.
func AuditJob(log *LogContents, findings []Finding, scaler *dataset.Scaler, d *JobData, cfg JobConfig) (*JobResult, error) {
	h := log.Header
	res := &JobResult{Header: h, Findings: findings, Releases: len(log.Releases)}
	bad := map[int]bool{}
	for _, f := range findings {
		bad[f.Seq] = true
	}
	type roundKey struct{ round, attempt int }
	rounds := map[roundKey]*engine.Release{}
	var sums, groups []*engine.Release
	var scalars, projection []*engine.Release
	projMode := h.Valuation != nil && h.Valuation.Mode == engine.ModeProjection
	for i := range log.Releases {
		r := &log.Releases[i]
		if bad[r.Seq] {
			continue
		}
		res.Matched++
		switch r.Purpose {
		case "moments":
			res.Moments++
		case "round":
			rounds[roundKey{r.Round, r.Attempt}] = r
			sums = append(sums, r)
		case "group":
			rounds[roundKey{r.Round, r.Attempt}] = r
			groups = append(groups, r)
		case aggregation.PurposeInfluence:
			if projMode {
				projection = append(projection, r)
			} else {
				scalars = append(scalars, r)
			}
		}
	}
	if d == nil {
		return res, nil // the transcript check alone
	}
	e, err := newJobEnv(h, d, scaler, cfg)
	if err != nil {
		return nil, err
	}
	m, err := model.New(e.spec, h.Features, h.Classes, h.Seed)
	if err != nil {
		return nil, err
	}
	rng := derive(cfg.Seed, "jobguess", 0, 0)
	attackSums := func(rs []*engine.Release, what string) error {
		if len(rs) == 0 {
			return nil
		}
		first := rs[0].Round
		var firstScores, all []score
		k := 0
		var rows, firstRows float64
		for _, r := range rs {
			rel, err := e.jobRelease(r, d)
			if err != nil {
				return err
			}
			if rel.truth.Len() == 0 {
				continue
			}
			ec := *e
			if r.Round-first >= cfg.MatchRounds {
				ec.cfg.MatchIters = -1
			}
			s, err := ec.attackRelease(m, r.Global, rel, rng)
			if err != nil {
				return fmt.Errorf("audit: release of transcript entry %d: %w", r.Seq, err)
			}
			all = append(all, s)
			rows += float64(rel.truth.Len())
			k = max(k, len(r.Contributors))
			if r.Round == first {
				firstScores = append(firstScores, s)
				firstRows += float64(rel.truth.Len())
			}
		}
		if len(all) == 0 {
			return nil
		}
		fr := e.row(fmt.Sprintf("%s, round %d", what, first), k, firstRows/float64(len(firstScores)), firstScores)
		ar := e.row(fmt.Sprintf("%s, all %d releases (mean)", what, len(all)), k, rows/float64(len(all)), all)
		res.Rows = append(res.Rows, fr, ar)
		return nil
	}
	if err := attackSums(sums, "sum of the round's updates (he)"); err != nil {
		return nil, err
	}
	if err := attackSums(groups, "group sums (groups)"); err != nil {
		return nil, err
	}
	if len(projection) > 0 && cfg.Vectors != nil {
		if err := e.attackProjection(m, res, projection, sums, cfg, d); err != nil {
			return nil, err
		}
	}
	if len(scalars) > 0 {
		if err := e.attackScalars(m, res, scalars, func(r *engine.Release) *engine.Release { return rounds[roundKey{r.Round, r.Attempt}] }, d); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func newJobEnv(h ReleaseLogHeader, d *JobData, scaler *dataset.Scaler, cfg JobConfig) (*env, error) {
	spec := h.Model.WithDefaults()
	if spec.Kind != model.KindLogReg && spec.Kind != model.KindMLP {
		return nil, fmt.Errorf("audit: job %s's model is %q; the job audit attacks logreg and mlp", h.Job, spec.Kind)
	}
	sc := dataset.Scaler{Mean: make([]float64, h.Features), Std: make([]float64, h.Features)}
	for i := range sc.Std {
		sc.Std[i] = 1
	}
	if scaler != nil {
		sc = *scaler
	}
	mi := cfg.MatchIters
	if mi == 0 {
		mi = -1
	}
	e := &env{
		cfg:  Config{Train: h.Train, MatchIters: mi, Seed: cfg.Seed},
		data: d.Dataset, spec: spec, classes: h.Classes,
		arch:  newArch(spec, h.Features, h.Classes),
		image: d.Dataset == "digits", lo: 0, hi: 16, side: 8,
		scaler: sc, train: model.Examples{Features: h.Features},
		val: sc.Apply(d.Validation), test: sc.Apply(d.Test), valRaw: d.Validation,
	}
	e.prior = labelCounts(d.Validation.Y, e.classes)
	if e.image {
		rows := make([][]float64, d.Validation.Len())
		for i := range rows {
			rows[i] = d.Validation.Row(i)
		}
		e.meanImage = meanRow(rows)
	}
	return e, nil
}

// jobRelease is a decrypted aggregate as attackRelease takes it: Σ nᵢΔᵢ
// (the decrypted mean times the public Σ nᵢ) and the rows behind it.
func (e *env) jobRelease(r *engine.Release, d *JobData) (release, error) {
	if len(r.Global) != len(r.Values) {
		return release{}, fmt.Errorf("audit: release of transcript entry %d has %d values and a model of %d parameters", r.Seq, len(r.Values), len(r.Global))
	}
	rel := release{sum: make([]float64, len(r.Values)), truth: model.Examples{Features: e.train.Features}}
	for _, id := range r.Contributors {
		rel.n += int(r.Samples[id])
		if d.FreeRiders[id] {
			continue
		}
		s, ok := d.Shards[id]
		if !ok {
			return release{}, fmt.Errorf("audit: release of transcript entry %d names client %q, whose data is unknown", r.Seq, id)
		}
		s = e.scaler.Apply(s)
		rel.truth.X = append(rel.truth.X, s.X...)
		rel.truth.Y = append(rel.truth.Y, s.Y...)
	}
	if rel.n == 0 {
		return release{}, fmt.Errorf("audit: release of transcript entry %d: its contributors claimed no rows", r.Seq)
	}
	for j, v := range r.Values {
		rel.sum[j] = v * float64(rel.n)
	}
	rel.per = int(math.Round(float64(rel.n) / float64(len(r.Contributors))))
	return rel, nil
}

// attackScalars fits each client's label shares to its influence scalars
// over the rounds (scalarShares, against the class-conditional validation
// gradients projected on each round's public vector v) and tests
// membership by the correlation over rounds between its scalars and each
// candidate row's own ⟨v, −∇ℓ(row)⟩, as Run's job does.
func (e *env) attackScalars(m model.Model, res *JobResult, scalars []*engine.Release, roundOf func(*engine.Release) *engine.Release, d *JobData) error {
	valByClass := make([]model.Examples, e.classes)
	for j := range valByClass {
		var idx []int
		for i, y := range e.val.Y {
			if y == j {
				idx = append(idx, i)
			}
		}
		valByClass[j] = e.val.Subset(idx)
	}
	type series struct {
		a    []float64
		h    [][]float64
		mem  [][]float64 // [row][round]
		non  [][]float64
		data model.Examples
		nonD model.Examples
		n    int64
	}
	per := map[string]*series{}
	var order []string
	hCache := map[int][]float64{}
	for _, r := range scalars {
		base := roundOf(r)
		if base == nil || len(base.Gradient) == 0 || len(r.Contributors) != 1 || len(r.Values) != 1 {
			continue
		}
		id := r.Contributors[0]
		if d.FreeRiders[id] {
			continue
		}
		s, ok := per[id]
		if !ok {
			shard, ok := d.Shards[id]
			if !ok {
				return fmt.Errorf("audit: influence scalar of transcript entry %d names client %q, whose data is unknown", r.Seq, id)
			}
			s = &series{data: e.scaler.Apply(shard), n: r.Samples[id]}
			s.nonD = e.test.Subset(e.labelMatched(s.data.Y))
			s.mem, s.non = make([][]float64, s.data.Len()), make([][]float64, s.nonD.Len())
			per[id] = s
			order = append(order, id)
		}
		if err := m.SetParams(base.Global); err != nil {
			return err
		}
		g := base.Gradient
		hr, ok := hCache[base.Seq]
		if !ok {
			hr = make([]float64, e.classes)
			gj := make([]float64, len(g))
			for j, vj := range valByClass {
				if vj.Len() == 0 {
					continue
				}
				if err := m.Gradient(vj, gj); err != nil {
					return err
				}
				hr[j] = dot(g, gj)
			}
			hCache[base.Seq] = hr
		}
		gx := make([]float64, len(g))
		for k, set := range []model.Examples{s.data, s.nonD} {
			for row := range set.Len() {
				if err := m.Gradient(set.Subset([]int{row}), gx); err != nil {
					return err
				}
				if k == 0 {
					s.mem[row] = append(s.mem[row], -dot(g, gx))
				} else {
					s.non[row] = append(s.non[row], -dot(g, gx))
				}
			}
		}
		s.a, s.h = append(s.a, r.Values[0]), append(s.h, hr)
	}
	var all []score
	var rows float64
	rounds := 0
	for _, id := range order {
		s := per[id]
		n := s.data.Len()
		scale := -float64(s.n) * e.cfg.Train.LearningRate * stepWeight(int(s.n), e.cfg.Train)
		y := make([]float64, len(s.a))
		for r := range y {
			y[r] = s.a[r] / scale
		}
		shares := scalarShares(s.h, y, 5000)
		truth := counts(s.data.Y, e.classes)
		sc := score{
			psnr: math.NaN(), psnrG: math.NaN(), ssim: math.NaN(), ssimG: math.NaN(),
			rowD: math.NaN(), rowDG: math.NaN(), featE: math.NaN(), featEG: math.NaN(),
			label:  labelOverlap(countsFromShares(shares, n), truth),
			labelG: labelOverlap(countsFromShares(e.prior, n), truth),
		}
		var mem, non []float64
		for _, a := range s.mem {
			mem = append(mem, pearson(s.a, a))
		}
		for _, a := range s.non {
			non = append(non, pearson(s.a, a))
		}
		sc.auc = AUC(mem, non)
		all = append(all, sc)
		rows += float64(n)
		rounds = max(rounds, len(s.a))
		res.Clients = append(res.Clients, ClientResult{Client: id, Release: "influence", Rows: n, Rounds: len(s.a), Labels: sc.label, LabelGuess: sc.labelG, AUC: sc.auc})
	}
	if len(all) == 0 {
		return nil
	}
	row := e.row(fmt.Sprintf("influence scalars of each client, %d rounds (influence)", rounds), 1, rows/float64(len(all)), all)
	res.Rows = append(res.Rows, row)
	return nil
}
