package aggregation

import (
	"cmp"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// PolicyConfig is the literal form of a member's decryption policy.
type PolicyConfig struct {
	// MinContributors is k: a member never helps decrypt an aggregate of
	// fewer than k client updates. Zero means the default, 3 (the job's
	// min_group_size, docs/DESIGN.md §3).
	MinContributors int `yaml:"min_contributors"`
}

// Policy is a validated [PolicyConfig].
type Policy struct {
	minContributors int
}

// NewPolicy fills defaults and validates: k ≥ 2, since k = 1 would let the
// coordinator decrypt a single update.
func NewPolicy(cfg PolicyConfig) (Policy, error) {
	if cfg.MinContributors == 0 {
		cfg.MinContributors = 3
	}
	if cfg.MinContributors < 2 || cfg.MinContributors > maxContributors {
		return Policy{}, fmt.Errorf("%w: min_contributors %d outside [2, %d]", ErrInvalidConfig, cfg.MinContributors, maxContributors)
	}
	return Policy{minContributors: cfg.MinContributors}, nil
}

// MinContributors is k.
func (p Policy) MinContributors() int { return p.minContributors }

// Record is what a member has served: every digest it produced a share
// for, and per (key, round) every contributor set it helped decrypt. The
// member consults it before every share and the client persists it
// ([Record.MarshalJSON]) so a restart cannot be used to obtain a second
// share. Not safe for concurrent use on its own; [Member] serialises it.
type Record struct {
	served map[[32]byte]ServedShare
	sets   map[roundKey][][]string
	coeffs map[coefficientKey]ServedCoefficient
	// c1 maps the c₁ digest of every block a member verified for a whole
	// share to the request it was verified for (verify.go): the same c₁
	// under another c₀ has another digest, and must not be served again.
	c1 map[[32]byte][32]byte
}

// coefficientKey names what an influence coefficient share is limited to:
// one per client per round of a job, across re-keys (the job, not the key
// instance, is the unit), retries and participant sets.
type coefficientKey struct {
	job    string
	round  uint64
	client string
}

// ServedCoefficient describes the one influence coefficient share a member
// produced for a (job, round, client).
type ServedCoefficient struct {
	Request [32]byte
	Key     [32]byte
	Digest  [32]byte
}

type roundKey struct {
	key   [32]byte
	round uint64
}

// ServedShare describes one digest a member produced a share for.
type ServedShare struct {
	Request [32]byte
	Key     [32]byte
	Round   uint64
	Purpose string
	Block   int
}

// NewRecord returns an empty record.
func NewRecord() *Record {
	return &Record{served: map[[32]byte]ServedShare{}, sets: map[roundKey][][]string{}, coeffs: map[coefficientKey]ServedCoefficient{}, c1: map[[32]byte][32]byte{}}
}

// ServedCoefficient reports whether an influence coefficient share was
// produced for client in round of job, and for what.
func (r *Record) ServedCoefficient(job string, round uint64, client string) (ServedCoefficient, bool) {
	s, ok := r.coeffs[coefficientKey{job, round, client}]
	return s, ok
}

// checkCoefficient applies the record to an influence request of job: the
// digest must be new (a ciphertext is served once, in any form) and no
// coefficient share may have been produced for the same (job, round,
// client), whatever the request.
func (r *Record) checkCoefficient(job string, req DecryptRequest) error {
	d := req.Digests[0]
	if s, ok := r.served[d]; ok {
		return fmt.Errorf("%w: %w: digest %x served for request %x (round %d, %s)", ErrPolicy, ErrAlreadyServed, d[:8], s.Request[:8], s.Round, s.Purpose)
	}
	if s, ok := r.coeffs[coefficientKey{job, req.Round, req.Contributors[0]}]; ok {
		return fmt.Errorf("%w: %w: client %q round %d already served by request %x (digest %x)", ErrPolicy, ErrInfluenceServed, req.Contributors[0], req.Round, s.Request[:8], s.Digest[:8])
	}
	return nil
}

// markCoefficient records a served coefficient share. The contributor set
// {client} is deliberately not added to the round's decrypted sets: the
// set rule of [Record.check] is about whole aggregates, and a single scalar
// per client is what the influence mode is allowed to reveal.
func (r *Record) markCoefficient(job string, req DecryptRequest, id [32]byte) {
	d := req.Digests[0]
	r.served[d] = ServedShare{Request: id, Key: req.Key, Round: req.Round, Purpose: req.Purpose}
	r.coeffs[coefficientKey{job, req.Round, req.Contributors[0]}] = ServedCoefficient{Request: id, Key: req.Key, Digest: d}
}

// Served reports whether a share was produced for digest, and for what.
func (r *Record) Served(digest [32]byte) (ServedShare, bool) {
	s, ok := r.served[digest]
	return s, ok
}

// Len is the number of digests served.
func (r *Record) Len() int { return len(r.served) }

// check applies the record to a request for block: the digest must be new,
// and the contributor set must not differ from a set already decrypted in
// the same round by fewer than k clients. The second rule closes the trap
// of docs/DESIGN.md §3: decrypting both S and S minus {i} reveals client i's update
// by subtraction; any two decrypted sets of a round must be equal or differ,
// both ways, by none or at least k clients.
func (r *Record) check(req DecryptRequest, digest [32]byte, k int) error {
	if s, ok := r.served[digest]; ok {
		return fmt.Errorf("%w: %w: digest %x served for request %x (round %d, %s)", ErrPolicy, ErrAlreadyServed, digest[:8], s.Request[:8], s.Round, s.Purpose)
	}
	for _, set := range r.sets[roundKey{req.Key, req.Round}] {
		onlyNew, onlyOld := setDiff(req.Contributors, set), setDiff(set, req.Contributors)
		if (onlyNew > 0 && onlyNew < k) || (onlyOld > 0 && onlyOld < k) {
			return fmt.Errorf("%w: round %d: contributors differ by %d/%d clients from a set already decrypted; fewer than k = %d would expose updates by subtraction",
				ErrPolicy, req.Round, onlyNew, onlyOld, k)
		}
	}
	return nil
}

// mark records a served share.
func (r *Record) mark(req DecryptRequest, id [32]byte, block int) {
	r.served[req.Digests[block]] = ServedShare{Request: id, Key: req.Key, Round: req.Round, Purpose: req.Purpose, Block: block}
	rk := roundKey{req.Key, req.Round}
	for _, set := range r.sets[rk] {
		if slices.Equal(set, req.Contributors) {
			return
		}
	}
	r.sets[rk] = append(r.sets[rk], slices.Clone(req.Contributors))
}

// setDiff counts the elements of a (sorted) not in b (sorted).
func setDiff(a, b []string) int {
	n, j := 0, 0
	for _, x := range a {
		for j < len(b) && b[j] < x {
			j++
		}
		if j == len(b) || b[j] != x {
			n++
		}
	}
	return n
}

type recordJSON struct {
	Version int             `json:"version"`
	Served  []servedJSON    `json:"served"`
	Sets    []roundSetsJSON `json:"sets"`
	// Coefficients was added after version 1 shipped; records without it
	// decode as having served none.
	Coefficients []coefficientJSON `json:"coefficients,omitempty"`
	// C1 was added later still (verify.go); records without it decode as
	// having verified no c₁.
	C1 []c1JSON `json:"c1,omitempty"`
}

type c1JSON struct {
	Digest  string `json:"digest"`
	Request string `json:"request"`
}

type coefficientJSON struct {
	Job     string `json:"job"`
	Round   uint64 `json:"round"`
	Client  string `json:"client"`
	Request string `json:"request"`
	Key     string `json:"key"`
	Digest  string `json:"digest"`
}

type servedJSON struct {
	Digest  string `json:"digest"`
	Request string `json:"request"`
	Key     string `json:"key"`
	Round   uint64 `json:"round"`
	Purpose string `json:"purpose"`
	Block   int    `json:"block"`
}

type roundSetsJSON struct {
	Key   string     `json:"key"`
	Round uint64     `json:"round"`
	Sets  [][]string `json:"sets"`
}

// MarshalJSON exports the record, digests sorted, for persistence.
func (r *Record) MarshalJSON() ([]byte, error) {
	out := recordJSON{Version: 1, Served: []servedJSON{}, Sets: []roundSetsJSON{}}
	for d, s := range r.served {
		out.Served = append(out.Served, servedJSON{
			Digest: hex.EncodeToString(d[:]), Request: hex.EncodeToString(s.Request[:]),
			Key: hex.EncodeToString(s.Key[:]), Round: s.Round, Purpose: s.Purpose, Block: s.Block,
		})
	}
	slices.SortFunc(out.Served, func(a, b servedJSON) int { return cmp.Compare(a.Digest, b.Digest) })
	for k, sets := range r.sets {
		out.Sets = append(out.Sets, roundSetsJSON{Key: hex.EncodeToString(k.key[:]), Round: k.round, Sets: sets})
	}
	slices.SortFunc(out.Sets, func(a, b roundSetsJSON) int {
		if c := cmp.Compare(a.Key, b.Key); c != 0 {
			return c
		}
		return cmp.Compare(a.Round, b.Round)
	})
	for k, c := range r.coeffs {
		out.Coefficients = append(out.Coefficients, coefficientJSON{
			Job: k.job, Round: k.round, Client: k.client, Request: hex.EncodeToString(c.Request[:]),
			Key: hex.EncodeToString(c.Key[:]), Digest: hex.EncodeToString(c.Digest[:]),
		})
	}
	slices.SortFunc(out.Coefficients, func(a, b coefficientJSON) int {
		return cmp.Or(cmp.Compare(a.Job, b.Job), cmp.Compare(a.Round, b.Round), cmp.Compare(a.Client, b.Client))
	})
	for d, req := range r.c1 {
		out.C1 = append(out.C1, c1JSON{Digest: hex.EncodeToString(d[:]), Request: hex.EncodeToString(req[:])})
	}
	slices.SortFunc(out.C1, func(a, b c1JSON) int { return cmp.Compare(a.Digest, b.Digest) })
	return json.Marshal(out)
}

// UnmarshalJSON imports a record exported by MarshalJSON, validating it.
func (r *Record) UnmarshalJSON(b []byte) error {
	var in recordJSON
	if err := json.Unmarshal(b, &in); err != nil {
		return fmt.Errorf("%w: record: %v", ErrMalformed, err)
	}
	if in.Version != 1 {
		return fmt.Errorf("%w: record version %d", ErrMalformed, in.Version)
	}
	out := NewRecord()
	var errs []error
	for i, s := range in.Served {
		d, e1 := hex32(s.Digest)
		req, e2 := hex32(s.Request)
		key, e3 := hex32(s.Key)
		if err := errors.Join(e1, e2, e3); err != nil {
			errs = append(errs, fmt.Errorf("served %d: %w", i, err))
			continue
		}
		out.served[d] = ServedShare{Request: req, Key: key, Round: s.Round, Purpose: s.Purpose, Block: s.Block}
	}
	for i, s := range in.Sets {
		key, err := hex32(s.Key)
		if err != nil {
			errs = append(errs, fmt.Errorf("sets %d: %w", i, err))
			continue
		}
		for _, set := range s.Sets {
			if !slices.IsSorted(set) {
				errs = append(errs, fmt.Errorf("sets %d: contributors not sorted", i))
			}
		}
		rk := roundKey{key, s.Round}
		out.sets[rk] = append(out.sets[rk], s.Sets...)
	}
	for i, c := range in.Coefficients {
		req, e1 := hex32(c.Request)
		key, e2 := hex32(c.Key)
		d, e3 := hex32(c.Digest)
		if err := errors.Join(e1, e2, e3); err != nil {
			errs = append(errs, fmt.Errorf("coefficients %d: %w", i, err))
			continue
		}
		if c.Client == "" {
			errs = append(errs, fmt.Errorf("coefficients %d: empty client", i))
			continue
		}
		out.coeffs[coefficientKey{c.Job, c.Round, c.Client}] = ServedCoefficient{Request: req, Key: key, Digest: d}
	}
	for i, c := range in.C1 {
		d, e1 := hex32(c.Digest)
		req, e2 := hex32(c.Request)
		if err := errors.Join(e1, e2); err != nil {
			errs = append(errs, fmt.Errorf("c1 %d: %w", i, err))
			continue
		}
		out.c1[d] = req
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: record: %w", ErrMalformed, errors.Join(errs...))
	}
	*r = *out
	return nil
}

func hex32(s string) ([32]byte, error) {
	var out [32]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		return out, fmt.Errorf("%q is not 32 hex-encoded bytes", s)
	}
	copy(out[:], b)
	return out, nil
}
