package engine

import (
	"fmt"
	"slices"
	"sync"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/model"
	"github.com/tallyfl/tally/valuation"
)

// ProjectionValuer is what the projection mode (ModeProjection) needs of
// a Valuer beyond the interface; a Valuer without it cannot value that
// mode's rounds (the round records the error).
type ProjectionValuer interface {
	// ProjectionVectors returns the round's public vectors
	// (valuation.ProjectionVectors: unit norm, off known) and the point
	// they are taken from, base after the server's own step along known;
	// total is the round's FedAvg step, as decrypted.
	ProjectionVectors(base, known, total []float64, scaler *dataset.Scaler) (vectors [][]float64, at []float64, err error)
	// Projection values players from their scalars s_i[j] = ⟨n_i·Δ_i,
	// v_j⟩ on the projection game (valuation.NewProjectionGame) from at.
	Projection(round int, at []float64, vectors, scalars [][]float64, weights []float64, scaler *dataset.Scaler) (valuation.Result, error)
}

// ModelProjectionVectors are the projection mode's public vectors
// (valuation.ProjectionVectors) of a round taken from at, total the
// round's FedAvg step, with m's validation gradients over val (part −1)
// or over its valuation.ProjectionParts(classes) per-class parts, the
// rows of the classes c with c mod parts = part (a zero gradient where a
// part has no rows). It sets m's parameters; the caller's m is its own.
// The coordinator's valuer, the audit and the experiments all rebuild a
// round's vectors with it, so that they are the same to the bit.
func ModelProjectionVectors(m model.Model, val model.Examples, classes int, at, total, known []float64) ([][]float64, error) {
	parts := valuation.ProjectionParts(classes)
	subsets := make([]model.Examples, parts)
	for p := range parts {
		var idx []int
		for i, y := range val.Y {
			if y%parts == p {
				idx = append(idx, i)
			}
		}
		subsets[p] = val.Subset(idx)
	}
	return valuation.ProjectionVectors(at, total, known, parts, func(p []float64, part int) ([]float64, error) {
		d := val
		if part >= 0 {
			d = subsets[part]
		}
		g := make([]float64, m.NumParams())
		if d.Len() == 0 {
			return g, nil
		}
		if err := m.SetParams(p); err != nil {
			return nil, err
		}
		return g, m.Gradient(d, g)
	})
}

// CiphertextStore keeps every client's whole ciphertexts of a projection
// round: the products with the public vectors are computed after the total
// is decrypted, since the vectors depend on it. With a collect task's
// spilling submission store (aggregation.NewSpillingSubmissionStore) they
// are kept in its spill file, not on the heap: every client's whole update
// had stayed in memory from its upload until the products (4.4 MB a
// client for a 111k-parameter model at LogN 14, 44 MB of the heap's peak
// with 10 clients, growing with them; issue 19). Each is read back,
// checked (aggregation.ErrCiphertextSpillCorrupt), when its products are
// computed. Safe for concurrent use.
type CiphertextStore struct {
	mu    sync.Mutex
	store *aggregation.SubmissionStore // where ciphertexts spill, if it does
	cts   map[string][]*keptCiphertext
	n     int
}

// keptCiphertext is one block's ciphertext: in the spill file, or in
// memory when the store does not spill or its write failed.
type keptCiphertext struct {
	mem     []byte
	spilled aggregation.SpilledCiphertext
}

// NewCiphertextStore is a store for updates of blocks ciphertexts, kept
// in st's spill file when st has one (st may be nil: in memory). st must
// stay open until the products are computed; the collect task's store,
// which the driver closes once the round's decryptions are over, does.
func NewCiphertextStore(blocks int, st *aggregation.SubmissionStore) *CiphertextStore {
	return &CiphertextStore{store: st, cts: map[string][]*keptCiphertext{}, n: blocks}
}

// Add keeps a copy of client's ciphertext of block (checked by the caller
// as it goes into the accumulator); the first one kept stays. A write to
// the spill file that fails keeps the copy in memory, so nothing is lost,
// and is reported: the caller refuses the upload, as it does when the
// influence ciphertext cannot be spilled.
func (s *CiphertextStore) Add(client string, block int, ct []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if block < 0 || block >= s.n {
		return fmt.Errorf("engine: block %d of client %s kept for projection, the update has %d", block, client, s.n)
	}
	c := s.cts[client]
	if c == nil {
		c = make([]*keptCiphertext, s.n)
		s.cts[client] = c
	}
	if c[block] != nil {
		return nil
	}
	if s.store != nil {
		sp, ok, err := s.store.SpillCiphertext(ct)
		if ok {
			c[block] = &keptCiphertext{spilled: sp}
			return nil
		}
		if err != nil {
			c[block] = &keptCiphertext{mem: slices.Clone(ct)}
			return fmt.Errorf("ciphertext %d of client %s, kept for projection: %w", block, client, err)
		}
	}
	c[block] = &keptCiphertext{mem: slices.Clone(ct)}
	return nil
}

// complete reports whether every ciphertext of client is kept.
func (s *CiphertextStore) complete(client string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.cts[client]
	if c == nil {
		return false
	}
	for _, k := range c {
		if k == nil {
			return false
		}
	}
	return true
}

// read returns client's ciphertext of block in buf (grown if short; nil
// allocates), always a copy, so that buf may be reused for the next one;
// one read back from the spill file is checked
// (aggregation.ErrCiphertextSpillCorrupt).
func (s *CiphertextStore) read(client string, block int, buf []byte) ([]byte, error) {
	s.mu.Lock()
	var k *keptCiphertext
	if c := s.cts[client]; block >= 0 && block < len(c) {
		k = c[block]
	}
	s.mu.Unlock()
	if k == nil {
		return nil, fmt.Errorf("engine: no ciphertext %d of client %s was kept for projection", block, client)
	}
	if k.mem == nil {
		b, err := k.spilled.Read(buf)
		if err != nil {
			return nil, fmt.Errorf("ciphertext %d of client %s: %w", block, client, err)
		}
		return b, nil
	}
	if cap(buf) < len(k.mem) {
		buf = make([]byte, len(k.mem))
	}
	buf = buf[:len(k.mem)]
	copy(buf, k.mem)
	return buf, nil
}

// projState is a projection round between its two phases: the total is
// decrypted, the products with the vectors queued.
type projState struct {
	at      []float64
	vectors [][]float64
	err     error
}

// startProjection is the projection round's second phase: from the
// decrypted total, the public vectors, each contributor's product with
// each of them (computed homomorphically from its kept ciphertexts), and
// one coefficient decryption item per (client, vector). It reports false
// when the round has no second phase.
func (e *Engine) startProjection() ([]Action, bool) {
	h := e.he
	t := h.collect
	if t == nil || t.Kept == nil || h.proj != nil || len(h.done) != 1 {
		return nil, false
	}
	h.proj = &projState{}
	pv, ok := e.valuer.(ProjectionValuer)
	if !ok {
		h.proj.err = fmt.Errorf("the valuer has no projection mode")
		return nil, false
	}
	total := h.done[0].values
	vectors, at, err := pv.ProjectionVectors(e.global, e.known, total, e.scaler)
	if err == nil && len(vectors) != e.job.ScalarsPerRound() {
		err = fmt.Errorf("%d public vectors, the job declares %d scalars per client and round", len(vectors), e.job.ScalarsPerRound())
	}
	if err != nil {
		h.proj.err = err
		return nil, false
	}
	h.proj.at, h.proj.vectors = at, vectors
	var items []*decItem
	var buf []byte
	for j, v := range vectors {
		infl, err := aggregation.NewInfluence(h.params, h.keyID, v, t.Length)
		if err != nil {
			h.proj.err = fmt.Errorf("public vector %d: %w", j, err)
			return nil, false
		}
		// Each product goes to the round's spill file as it is finished,
		// like the influence mode's (attachAccumulator).
		infl.SpillTo(t.Submissions)
		for _, id := range h.rec.Contributors {
			if !t.Kept.complete(id) {
				continue // not valued this round
			}
			// One block at a time, read back into one buffer: the
			// client's whole update is never on the heap at once.
			for b := range t.Kept.n {
				ct, err := t.Kept.read(id, b, buf)
				if err != nil {
					h.proj.err = fmt.Errorf("product of %s with vector %d: %w", id, j, err)
					return nil, false
				}
				buf = ct
				if err := infl.Add(id, ct); err != nil {
					h.proj.err = fmt.Errorf("product of %s with vector %d: %w", id, j, err)
					return nil, false
				}
			}
			p, err := infl.FinalizeProduct(id)
			if err != nil {
				h.proj.err = fmt.Errorf("product of %s with vector %d: %w", id, j, err)
				return nil, false
			}
			items = append(items, &decItem{purpose: aggregation.PurposeInfluence, coefficient: true, client: id, product: p, vector: v, vectorIndex: j})
		}
	}
	h.queue = items
	return e.nextDecryption(), true
}

// valueProjection scores a projection round from the decrypted scalars
// (items after the total): a client missing any of its scalars is left
// out of the round's game.
func (e *Engine) valueProjection(rec *RoundRecord, t *Task, items []*decItem) {
	cfg := e.job.Valuation
	rv := &RoundValuation{Mode: cfg.Mode, Method: cfg.Method, Values: map[string]float64{}, StdErr: map[string]float64{}}
	rec.Valuation = rv
	p := e.he.proj
	if p.err != nil {
		rv.Error = p.err.Error()
		return
	}
	m := len(p.vectors)
	got := map[string][]float64{}
	lost := map[string]bool{}
	for _, it := range items {
		if it.missing {
			lost[it.client] = true
			continue
		}
		s := got[it.client]
		if s == nil {
			s = make([]float64, m)
			got[it.client] = s
		}
		s[it.vectorIndex] = it.scalar
	}
	var ids []string
	var scalars [][]float64
	var w []float64
	for _, id := range rec.Contributors {
		if s, ok := got[id]; ok && !lost[id] {
			ids, scalars, w = append(ids, id), append(scalars, s), append(w, float64(rec.Samples[id]))
		}
	}
	if len(ids) == 0 {
		rv.Error = "no client's projection scalars could all be decrypted"
		return
	}
	res, err := e.projectionAsOne(rv, t, ids, p.at, p.vectors, scalars, w)
	if err != nil {
		rv.Error = err.Error()
		return
	}
	rv.Evaluations = res.Evaluations
}

// valueProjectionClear is the projection mode without encryption: the
// same vectors, scalars and game, computed from the updates in the clear.
func (e *Engine) valueProjectionClear(rv *RoundValuation, t *Task, results []Result) (valuation.Result, error) {
	pv, ok := e.valuer.(ProjectionValuer)
	if !ok {
		return valuation.Result{}, fmt.Errorf("the valuer has no projection mode")
	}
	updates, weights := make([][]float64, len(results)), make([]float64, len(results))
	ids := make([]string, len(results))
	total := make([]float64, len(e.global))
	var n float64
	for i, r := range results {
		updates[i], weights[i], ids[i] = r.Update, float64(r.Samples), r.Client
		n += weights[i]
		for k, x := range r.Update {
			total[k] += weights[i] * x
		}
	}
	for k := range total {
		total[k] /= n
	}
	vectors, at, err := pv.ProjectionVectors(e.global, e.known, total, e.scaler)
	if err != nil {
		return valuation.Result{}, err
	}
	scalars, err := valuation.ProjectionScalars(vectors, updates, weights)
	if err != nil {
		return valuation.Result{}, err
	}
	return e.projectionAsOne(rv, t, ids, at, vectors, scalars, weights)
}

// projectionAsOne values a projection round with copies (clients of
// equal weight whose scalars agree, valuation.ProjectionReplicas) as one
// player: their mean scalars and mean weight.
func (e *Engine) projectionAsOne(rv *RoundValuation, t *Task, ids []string, at []float64, vectors, scalars [][]float64, weights []float64) (valuation.Result, error) {
	pv := e.valuer.(ProjectionValuer)
	per := make([][]float64, len(scalars))
	for i, s := range scalars {
		per[i] = make([]float64, len(s))
		for j, x := range s {
			per[i][j] = x / weights[i]
		}
	}
	return valueAsOne(rv, ids, valuation.ProjectionReplicas(scalars, weights), per, weights, func(us [][]float64, ws []float64) (valuation.Result, error) {
		ss := make([][]float64, len(us))
		for c, u := range us {
			ss[c] = make([]float64, len(u))
			for j, x := range u {
				ss[c][j] = x * ws[c]
			}
		}
		return pv.Projection(t.Round, at, vectors, ss, ws, e.scaler)
	})
}
