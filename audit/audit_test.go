package audit

import (
	"errors"
	"math"
	"testing"

	"github.com/tallyfl/tally/model"
)

// TestBaselineAttackBeatsGuessing is the harness's own alarm: one client's
// plaintext update of a small batch of digits, from the real local
// training, must be inverted far better than guessing digits from the
// attacker's validation set, or the harness has stopped attacking.
func TestBaselineAttackBeatsGuessing(t *testing.T) {
	for _, kind := range []string{model.KindLogReg, model.KindMLP} {
		t.Run(kind, func(t *testing.T) {
			// Few iterations of gradient matching keep it fast under -race.
			cfg := Config{Datasets: []string{"digits"}, Models: []string{kind}, Trials: 1, MatchIters: 200}.withDefaults()
			if err := cfg.validate(); err != nil {
				t.Fatal(err)
			}
			e, err := newEnv(cfg, "digits", kind)
			if err != nil {
				t.Fatal(err)
			}
			m, err := e.newModel(0)
			if err != nil {
				t.Fatal(err)
			}
			global := m.Params()
			data := e.train.Subset(derive(cfg.Seed, "rows", 0, 0).Perm(e.train.Len())[:cfg.SmallRows])
			upd, err := e.localUpdate(m, global, data, derive(cfg.Seed, "train", 0, 0))
			if err != nil {
				t.Fatal(err)
			}
			s, err := e.attackRelease(m, global, e.sumOf([][]float64{upd}, []model.Examples{data}), derive(cfg.Seed, "guess", 0, 0))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("PSNR %.1f dB (guess %.1f), SSIM %.3f (guess %.3f), labels %.3f (guess %.3f), MIA AUC %.3f",
				s.psnr, s.psnrG, s.ssim, s.ssimG, s.label, s.labelG, s.auc)
			if !(s.psnr > s.psnrG+3) {
				t.Errorf("PSNR %.1f dB, want 3 dB above guessing's %.1f dB", s.psnr, s.psnrG)
			}
			if !(s.ssim > s.ssimG+0.15) {
				t.Errorf("SSIM %.3f, want 0.15 above guessing's %.3f", s.ssim, s.ssimG)
			}
			if !(s.label > s.labelG+0.2) {
				t.Errorf("label recovery %.3f, want 0.2 above guessing's %.3f", s.label, s.labelG)
			}
		})
	}
}

// TestOneRowIsExact: for one example the first-layer ratio is the row
// itself and the bias sign gives the label (iDLG), after any number of
// local steps with momentum.
func TestOneRowIsExact(t *testing.T) {
	cfg := Config{}.withDefaults()
	e, err := newEnv(cfg, "breast-cancer", model.KindMLP)
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.newModel(0)
	if err != nil {
		t.Fatal(err)
	}
	global := m.Params()
	data := e.train.Subset([]int{3})
	upd, err := e.localUpdate(m, global, data, derive(1, "train", 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	cands := firstLayerInversion(e.arch, upd)
	if len(cands) == 0 {
		t.Fatal("no candidate: every first-layer bias is still")
	}
	for i, c := range cands {
		if d := rms(c, data.Row(0)); d > 1e-6 {
			t.Errorf("candidate %d is %.3g RMS from the row, want exact", i, d)
		}
	}
	shares := labelShares(e.arch, global, upd, 1, cfg.Train, e.val)
	if got := countsFromShares(shares, 1); got[data.Y[0]] != 1 {
		t.Errorf("label counts %v, the row's label is %d", got, data.Y[0])
	}
}

func TestMetrics(t *testing.T) {
	a := []float64{0, 1, 2, 3, 4, 5, 6, 7, 8}
	if v := SSIM(a, a, 3, 16); math.Abs(v-1) > 1e-12 {
		t.Errorf("SSIM of an image with itself %v, want 1", v)
	}
	b := make([]float64, 9)
	for i := range b {
		b[i] = a[i] + 1
	}
	if v := PSNR(a, b, 16); math.Abs(v-20*math.Log10(16)) > 1e-9 {
		t.Errorf("PSNR at RMS error 1 and peak 16 = %v, want %v", v, 20*math.Log10(16))
	}
	for _, c := range []struct {
		name     string
		mem, non []float64
		want     float64
	}{
		{"separated", []float64{3, 4}, []float64{1, 2}, 1},
		{"reversed", []float64{1, 2}, []float64{3, 4}, 0},
		{"ties", []float64{1, 1}, []float64{1, 1}, 0.5},
		{"half", []float64{1, 4}, []float64{2, 3}, 0.5},
	} {
		if got := AUC(c.mem, c.non); got != c.want {
			t.Errorf("%s: AUC %v, want %v", c.name, got, c.want)
		}
	}
	if got := countsFromShares([]float64{0.5, 0.3, 0.2}, 7); got[0]+got[1]+got[2] != 7 || got[0] != 4 {
		t.Errorf("countsFromShares(0.5, 0.3, 0.2; 7) = %v, want 4+2+1 or 4+1+2", got)
	}
	p := projectSimplex([]float64{0.9, 0.9, -1})
	if math.Abs(p[0]-0.5) > 1e-12 || math.Abs(p[1]-0.5) > 1e-12 || p[2] != 0 {
		t.Errorf("projectSimplex(0.9, 0.9, −1) = %v, want (0.5, 0.5, 0)", p)
	}
}

func TestConfigErrors(t *testing.T) {
	_, err := Run(Config{Datasets: []string{"wsn"}, Trials: -1, Ks: []int{1}})
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("error %v, want ErrConfig", err)
	}
	want := []string{
		`audit: invalid config: datasets[0]: want digits or breast-cancer (the image and the tabular sample), got "wsn"`,
		"audit: invalid config: trials: must be ≥ 1, got -1",
		"audit: invalid config: ks[0]: a sum needs ≥ 2 updates, got 1",
	}
	for _, w := range want {
		if !contains(err.Error(), w) {
			t.Errorf("error\n%v\nlacks %q", err, w)
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// Run is a function of its config: the same seed gives the same table.
func TestRunDeterministic(t *testing.T) {
	cfg := Config{Datasets: []string{"breast-cancer"}, Models: []string{model.KindLogReg}, Trials: 1, Ks: []int{2},
		GroupK: 2, Clients: 3, Rounds: 2, MatchIters: 20, SmallRows: 4}
	a, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Rows) != len(b.Rows) || len(a.Rows) == 0 {
		t.Fatalf("%d rows, then %d", len(a.Rows), len(b.Rows))
	}
	for i := range a.Rows {
		x, y := a.Rows[i], b.Rows[i]
		same := func(u, v float64) bool { return u == v || (math.IsNaN(u) && math.IsNaN(v)) }
		if x.Release != y.Release || !same(x.RowDist, y.RowDist) || !same(x.LabelAcc, y.LabelAcc) || !same(x.AUC, y.AUC) {
			t.Errorf("row %d differs between runs:\n%+v\n%+v", i, x, y)
		}
	}
}
