package valuation

import (
	"fmt"
	"math"
)

// The projection utility (issue 16) values a coalition from what may be
// decrypted: for m public vectors v_1 … v_m (their Gram matrix G public)
// and each player's m scalars s_i[j] = ⟨n_i·Δ_i, v_j⟩, the projection of
// d_S = Σ_S n_i·Δ_i onto span(v) is P(d_S) = V·G⁺·Σ_S s_i, a sum of the
// players' own projections, so every coalition of a game is known from
// the n·m scalars alone. U(S) is then the line-search utility
// (linesearch.go) of the projected updates: the TRUE validation score at
// the best step along P(d_S), no longer than S's FedAvg step.
//
// The game is played in an orthonormal basis of the span (Span): with
// G = Q·Λ·Qᵀ, the unit vectors u_k = V·Q_k/√λ_k, and a player's
// coordinates z_i = Λ^(-1/2)·Qᵀ·s_i, norms and inner products in the
// basis are those of the parameter space, so the federated game's step
// lengths and caps are those of the projected updates.

const (
	// spanTol: an eigen-direction of the Gram matrix of unit vectors
	// whose eigenvalue is below spanTol times the largest is dropped.
	// The scalars carry the decryption's relative noise (about 1e-7 of
	// ‖v‖·‖d‖ under the default CKKS parameters), which a coordinate
	// along such a direction amplifies by 1/√λ: 1e-6 bounds that by 1e3.
	spanTol = 1e-6
	// jacobiSweeps bounds the cyclic Jacobi sweeps; a 10×10 matrix
	// converges in fewer than 10.
	jacobiSweeps = 50
)

// ProjectionAlphas are the points base + α·total of the round's line where
// the projection mode's gradients are taken (total: the round's decrypted
// FedAvg step).
var ProjectionAlphas = []float64{0.5, 1, 2}

// MaxProjectionParts bounds the per-class gradient parts: classes are
// dealt into min(classes, MaxProjectionParts) parts, class c into part
// c mod parts.
const MaxProjectionParts = 5

// ProjectionVectorCount is the number of public vectors, and so of scalars
// per client and round, of the projection mode for a model of classes
// classes: the total, one gradient per ProjectionAlphas, and the per-class
// parts.
func ProjectionVectorCount(classes int) int {
	return 1 + len(ProjectionAlphas) + ProjectionParts(classes)
}

// ProjectionParts is min(classes, MaxProjectionParts), at least 1.
func ProjectionParts(classes int) int { return max(1, min(classes, MaxProjectionParts)) }

// ProjectionVectors returns the projection mode's public vectors, each of
// unit norm (a zero one stays zero) and with its component along known
// removed (ProjectOff, so that an echo of the previous global change has
// all its scalars zero): total, the validation gradient at base + α·total
// for each α of ProjectionAlphas, and the gradient at base of each of
// parts per-class parts. grad(at, part) is the validation gradient at at
// over the whole validation set (part −1) or over the rows whose class c
// has c mod parts = part, as a sum whose parts add up to the whole.
func ProjectionVectors(base, total, known []float64, parts int, grad func(at []float64, part int) ([]float64, error)) ([][]float64, error) {
	if len(total) != len(base) || (known != nil && len(known) != len(base)) {
		return nil, fmt.Errorf("%w: base %d, total %d, known %d values", ErrLength, len(base), len(total), len(known))
	}
	if parts < 1 {
		return nil, fmt.Errorf("%w: %d class parts", ErrConfig, parts)
	}
	out := [][]float64{append([]float64(nil), total...)}
	at := make([]float64, len(base))
	for _, a := range ProjectionAlphas {
		for k := range at {
			at[k] = base[k] + a*total[k]
		}
		g, err := grad(at, -1)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	for p := range parts {
		g, err := grad(base, p)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	for j, v := range out {
		if len(v) != len(base) {
			return nil, fmt.Errorf("%w: vector %d has %d values, want %d", ErrLength, j, len(v), len(base))
		}
		v = ProjectOff(v, known)
		if n := norm(v); n > 0 {
			for k := range v {
				v[k] /= n
			}
		}
		out[j] = v
	}
	return out, nil
}

// Gram returns the matrix of inner products of vectors.
func Gram(vectors [][]float64) [][]float64 {
	g := make([][]float64, len(vectors))
	for i := range g {
		g[i] = make([]float64, len(vectors))
	}
	for i, a := range vectors {
		for j := i; j < len(vectors); j++ {
			g[i][j] = dot(a, vectors[j])
			g[j][i] = g[i][j]
		}
	}
	return g
}

// ProjectionScalars computes in the clear what the committee decrypts
// under encryption: s_i[j] = ⟨n_i·Δ_i, v_j⟩.
func ProjectionScalars(vectors, updates [][]float64, weights []float64) ([][]float64, error) {
	if len(weights) != len(updates) {
		return nil, fmt.Errorf("%w: %d updates, %d weights", ErrLength, len(updates), len(weights))
	}
	out := make([][]float64, len(updates))
	for i, u := range updates {
		out[i] = make([]float64, len(vectors))
		for j, v := range vectors {
			if len(v) != len(u) {
				return nil, fmt.Errorf("%w: update %d has %d values, vector %d %d", ErrLength, i, len(u), j, len(v))
			}
			out[i][j] = weights[i] * dot(u, v)
		}
	}
	return out, nil
}

// Span is an orthonormal basis of the span of m public vectors, known from
// their Gram matrix alone.
type Span struct {
	m     int
	basis [][]float64 // r rows of m: u_k = Σ_j basis[k][j]·v_j
}

// NewSpan diagonalises the symmetric Gram matrix (cyclic Jacobi
// rotations; Golub & Van Loan, "Matrix Computations", §8.5) and keeps
// the directions whose eigenvalue is at least spanTol times the largest.
// It fails with ErrInput on a matrix that is not square, symmetric and
// finite.
func NewSpan(gram [][]float64) (*Span, error) {
	m := len(gram)
	a := make([][]float64, m)
	for i, row := range gram {
		if len(row) != m {
			return nil, fmt.Errorf("%w: Gram row %d has %d entries, want %d", ErrInput, i, len(row), m)
		}
		for j, x := range row {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return nil, fmt.Errorf("%w: Gram[%d][%d] = %v", ErrInput, i, j, x)
			}
			if d := math.Abs(x - gram[j][i]); d > 1e-9*(1+math.Abs(x)) {
				return nil, fmt.Errorf("%w: Gram matrix not symmetric at (%d, %d)", ErrInput, i, j)
			}
		}
		a[i] = append([]float64(nil), row...)
	}
	q := make([][]float64, m)
	for i := range q {
		q[i] = make([]float64, m)
		q[i][i] = 1
	}
	for range jacobiSweeps {
		off := 0.0
		for i := range m {
			for j := i + 1; j < m; j++ {
				off += a[i][j] * a[i][j]
			}
		}
		if off == 0 {
			break
		}
		for p := range m {
			for r := p + 1; r < m; r++ {
				if a[p][r] == 0 {
					continue
				}
				theta := (a[r][r] - a[p][p]) / (2 * a[p][r])
				t := math.Copysign(1, theta) / (math.Abs(theta) + math.Sqrt(theta*theta+1))
				c := 1 / math.Sqrt(t*t+1)
				s := t * c
				for k := range m {
					akp, akr := a[k][p], a[k][r]
					a[k][p], a[k][r] = c*akp-s*akr, s*akp+c*akr
				}
				for k := range m {
					apk, ark := a[p][k], a[r][k]
					a[p][k], a[r][k] = c*apk-s*ark, s*apk+c*ark
				}
				for k := range m {
					qkp, qkr := q[k][p], q[k][r]
					q[k][p], q[k][r] = c*qkp-s*qkr, s*qkp+c*qkr
				}
			}
		}
	}
	top := 0.0
	for i := range m {
		top = max(top, a[i][i])
	}
	sp := &Span{m: m}
	if top <= 0 {
		return sp, nil
	}
	// Columns in decreasing eigenvalue order, for a deterministic basis.
	order := make([]int, m)
	for i := range order {
		order[i] = i
	}
	for i := 1; i < m; i++ {
		for k := i; k > 0 && a[order[k]][order[k]] > a[order[k-1]][order[k-1]]; k-- {
			order[k], order[k-1] = order[k-1], order[k]
		}
	}
	for _, i := range order {
		l := a[i][i]
		if l < spanTol*top {
			continue
		}
		row := make([]float64, m)
		for j := range m {
			row[j] = q[j][i] / math.Sqrt(l)
		}
		sp.basis = append(sp.basis, row)
	}
	return sp, nil
}

// Rank is the dimension kept.
func (s *Span) Rank() int { return len(s.basis) }

// Coords returns the coordinates z_k = ⟨d, u_k⟩ of the projection of d
// from its scalars s[j] = ⟨d, v_j⟩.
func (s *Span) Coords(scalars []float64) ([]float64, error) {
	if len(scalars) != s.m {
		return nil, fmt.Errorf("%w: %d scalars for %d vectors", ErrLength, len(scalars), s.m)
	}
	z := make([]float64, len(s.basis))
	for k, b := range s.basis {
		z[k] = dot(b, scalars)
	}
	return z, nil
}

// Combination writes into c (m entries) the coefficients over the public
// vectors of Σ_k z_k·u_k.
func (s *Span) Combination(z, c []float64) {
	clear(c)
	for k, b := range s.basis {
		for j, x := range b {
			c[j] += z[k] * x
		}
	}
}

// SpanScorer scores base + Σ_j c_j·v_j for coefficients c over the public
// vectors; the same contract as ParamScorer.
type SpanScorer interface {
	Score(coeffs []float64) (float64, error)
}

type spanScorer struct {
	span  *Span
	inner SpanScorer
	c     []float64
}

func (s *spanScorer) Score(z []float64) (float64, error) {
	s.span.Combination(z, s.c)
	return s.inner.Score(s.c)
}

// NewProjectionGame is the projection mode's game: players with scalars
// s_i (m each, s_i[j] = ⟨n_i·Δ_i, v_j⟩) and weights n_i, the public
// vectors' Gram matrix, and newScorer's validation score along
// combinations of the public vectors from the round's base. U(S) is the
// line-search utility of the projected updates P(Δ_i) (FederatedOptions
// with LineSearch, nothing known: the vectors are off it already), so a
// zero update, or one with all its scalars zero (an echo of the known
// direction), can only shorten a coalition's step, and when every Δ_i
// lies in the span the game is the line-search game of the updates
// themselves.
func NewProjectionGame(gram [][]float64, scalars [][]float64, weights []float64, newScorer func() (SpanScorer, error), opts FederatedOptions) (*FederatedGame, error) {
	if newScorer == nil {
		return nil, fmt.Errorf("%w: newScorer is nil", ErrScorer)
	}
	if len(scalars) != len(weights) {
		return nil, fmt.Errorf("%w: %d players' scalars, %d weights", ErrLength, len(scalars), len(weights))
	}
	span, err := NewSpan(gram)
	if err != nil {
		return nil, err
	}
	updates := make([][]float64, len(scalars))
	for i, s := range scalars {
		for j, x := range s {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return nil, fmt.Errorf("%w: player %d scalar %d = %v", ErrInput, i, j, x)
			}
		}
		z, err := span.Coords(s)
		if err != nil {
			return nil, fmt.Errorf("player %d: %w", i, err)
		}
		if w := weights[i]; w > 0 && !math.IsInf(w, 0) {
			for k := range z {
				z[k] /= w
			}
		}
		updates[i] = z
	}
	opts.LineSearch, opts.Known = true, nil
	r := max(span.Rank(), 1) // a zero span is one dimension of nothing
	for i := range updates {
		if len(updates[i]) < r {
			updates[i] = append(updates[i], make([]float64, r-len(updates[i]))...)
		}
	}
	pad := func(z []float64) []float64 { return z[:span.Rank()] }
	return NewFederatedGame(make([]float64, r), updates, weights, func() (ParamScorer, error) {
		inner, err := newScorer()
		if err != nil {
			return nil, err
		}
		ss := &spanScorer{span: span, inner: inner, c: make([]float64, span.m)}
		return paramFunc(func(z []float64) (float64, error) { return ss.Score(pad(z)) }), nil
	}, opts)
}

// paramFunc adapts a function to ParamScorer.
type paramFunc func([]float64) (float64, error)

func (f paramFunc) Score(p []float64) (float64, error) { return f(p) }

// NewSpanScorer is the SpanScorer of inner at base + Σ_j c_j·vectors[j]
// (one buffer: not safe for concurrent use, as a ParamScorer need not be).
func NewSpanScorer(base []float64, vectors [][]float64, inner ParamScorer) SpanScorer {
	return &combScorer{base: base, vectors: vectors, inner: inner, buf: make([]float64, len(base))}
}

type combScorer struct {
	base    []float64
	vectors [][]float64
	inner   ParamScorer
	buf     []float64
}

func (s *combScorer) Score(c []float64) (float64, error) {
	if len(c) != len(s.vectors) {
		return 0, fmt.Errorf("%w: %d coefficients for %d vectors", ErrLength, len(c), len(s.vectors))
	}
	copy(s.buf, s.base)
	for j, v := range s.vectors {
		if c[j] == 0 {
			continue
		}
		for k, x := range v {
			s.buf[k] += c[j] * x
		}
	}
	return s.inner.Score(s.buf)
}
