package audit

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tallyfl/tally/model"
	"github.com/tallyfl/tally/valuation"
)

// TestSpanRecoversProjection: the coordinates from the scalars are the
// update's own in the orthonormal basis, and the recovered component is
// its projection onto the span (the residual is orthogonal to every v_j).
func TestSpanRecoversProjection(t *testing.T) {
	rng := derive(1, "test", 0, 0)
	const n, m = 40, 6
	vs := make([][]float64, m)
	for j := range vs {
		vs[j] = make([]float64, n)
		for i := range vs[j] {
			vs[j][i] = rng.NormFloat64()
		}
	}
	vs[5] = append([]float64(nil), vs[0]...) // a repeated vector is dropped
	x := make([]float64, n)
	for i := range x {
		x[i] = rng.NormFloat64()
	}
	s := make([]float64, m)
	for j, v := range vs {
		s[j] = dot(x, v)
	}
	sp := newSpan(vs)
	if len(sp.u) != 5 {
		t.Fatalf("span of %d directions, want 5", len(sp.u))
	}
	c, want := sp.coords(s), sp.project(x)
	for k := range c {
		if d := c[k] - want[k]; d > 1e-9 || d < -1e-9 {
			t.Errorf("coordinate %d: %g from the scalars, %g in the clear", k, c[k], want[k])
		}
	}
	p := sp.recover(c)
	for j, v := range vs {
		r := 0.0
		for i := range x {
			r += (x[i] - p[i]) * v[i]
		}
		if r > 1e-9 || r < -1e-9 {
			t.Errorf("residual·v_%d = %g, want 0", j, r)
		}
	}
}

// TestProjectionAttackBeatsGuessing is the projection release's alarm: a
// small job's projection scalars must give the clients' label shares
// better than the prior guess, or the attack has stopped attacking.
func TestProjectionAttackBeatsGuessing(t *testing.T) {
	for _, tc := range []struct{ data, kind string }{{"digits", model.KindLogReg}, {"digits", model.KindMLP}} {
		t.Run(tc.data+"/"+tc.kind, func(t *testing.T) {
			cfg := Config{Clients: 4, Rounds: 4, Alpha: 0.1, MatchIters: -1}.withDefaults()
			e, err := newEnv(cfg, tc.data, tc.kind)
			if err != nil {
				t.Fatal(err)
			}
			rows, _, err := e.job()
			if err != nil {
				t.Fatal(err)
			}
			var pr *Row
			for i := range rows {
				if strings.Contains(rows[i].Release, "projection scalars") {
					pr = &rows[i]
				}
				t.Logf("%s: labels %.3f (guess %.3f) AUC %.3f PSNR %.1f (%.1f) rowdist %.2f (%.2f)", rows[i].Release, rows[i].LabelAcc, rows[i].LabelAccGuess, rows[i].AUC, rows[i].PSNR, rows[i].PSNRGuess, rows[i].RowDist, rows[i].RowDistGuess)
			}
			if pr == nil {
				t.Fatal("no projection scalars row")
			}
			if want := valuation.ProjectionVectorCount(e.classes); !strings.Contains(pr.Release, fmt.Sprintf("projection scalars, %d per round", want)) {
				t.Errorf("row %q does not say %d scalars per round", pr.Release, want)
			}
			if !(pr.LabelAcc > pr.LabelAccGuess+0.2) {
				t.Errorf("label recovery %.3f, want 0.2 above guessing's %.3f", pr.LabelAcc, pr.LabelAccGuess)
			}
		})
	}
}
