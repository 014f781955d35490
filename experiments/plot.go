package experiments

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/tallyfl/tally/valuation"
)

// WritePlots draws, into dir:
//
//   - fidelity-cost-MODE.png: per mode, each method's Spearman against
//     exact Shapley against the utility evaluations a run used, both
//     averaged over the scenarios with an exact ground truth. Vector methods
//     use no coalition and sit at x = 1.
//   - fidelity-privacy.png: each private mode's methods, Spearman against
//     exact Shapley against the scalars the mode decrypts per client and
//     round (beside the sums of ≥ k updates every private mode decrypts),
//     averaged over the scenarios with an exact ground truth: what
//     fidelity costs in released values. Plain mode decrypts every update
//     and is not drawn.
//   - values-SCENARIO.png: per scenario, each client's FedSV total (mean
//     over seeds) under the reference and a few methods of the plain mode
//     and of the private modes, each divided by its Σ|φ| so that methods of
//     different scales (and LOO, whose values can sum to ≈ 0) share an axis.
func WritePlots(dir string, scenarios []Scenario, runs []SeedRun, ss []Summary) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	modes := []string{}
	for _, s := range ss {
		if s.Mode != "" && !slices.Contains(modes, s.Mode) {
			modes = append(modes, s.Mode)
		}
	}
	exact := map[string]bool{}
	for _, sc := range scenarios {
		exact[sc.Name] = sc.Reference == ReferenceExact
	}
	for _, mode := range modes {
		if err := fidelityPlot(filepath.Join(dir, "fidelity-cost-"+mode+".png"), mode, ss, exact); err != nil {
			return err
		}
	}
	if err := privacyPlot(filepath.Join(dir, "fidelity-privacy.png"), ss, exact); err != nil {
		return err
	}
	for _, sc := range scenarios {
		var rs []SeedRun
		for _, r := range runs {
			if r.Scenario == sc.Name {
				rs = append(rs, r)
			}
		}
		if len(rs) == 0 {
			continue
		}
		if err := valuesPlot(filepath.Join(dir, "values-"+sc.Name+".png"), sc.Name, rs); err != nil {
			return err
		}
	}
	return nil
}

func fidelityPlot(path, mode string, ss []Summary, exact map[string]bool) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Fidelity against cost, %s mode (mean over the scenarios with exact ground truth)", mode)
	p.X.Label.Text = "utility evaluations per run (all rounds; vector methods at 1)"
	p.Y.Label.Text = "Spearman ρ vs exact Shapley"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	var methods []string
	for _, s := range ss {
		if s.Mode == mode && exact[s.Scenario] && !strings.HasPrefix(s.Method, "reference:") && !slices.Contains(methods, s.Method) {
			methods = append(methods, s.Method)
		}
	}
	var pts plotter.XYs
	var labels []string
	for _, method := range methods {
		var xs, ys []float64
		for _, s := range ss {
			if s.Mode != mode || s.Method != method || !exact[s.Scenario] {
				continue
			}
			y, x := s.stat("spearman").Mean, s.stat("evaluations").Mean
			if math.IsNaN(y) || math.IsNaN(x) {
				continue
			}
			xs, ys = append(xs, x), append(ys, y)
		}
		if len(xs) == 0 {
			continue
		}
		pts = append(pts, plotter.XY{X: math.Max(mean(xs), 1), Y: mean(ys)})
		labels = append(labels, method)
	}
	return labelledScatter(p, path, pts, labels, 0, func(p *plot.Plot) { p.X.Max *= 4 })
}

// labelledScatter draws pts, each with its label, in colour colour on p
// and saves it to path; widen then makes room for the labels. Nothing is
// written without points.
func labelledScatter(p *plot.Plot, path string, pts plotter.XYs, labels []string, colour int, widen func(*plot.Plot)) error {
	if len(pts) == 0 {
		return nil
	}
	sc, err := plotter.NewScatter(pts)
	if err != nil {
		return err
	}
	sc.GlyphStyle.Color = plotutil.Color(colour)
	sc.GlyphStyle.Radius = vg.Points(3)
	lb, err := plotter.NewLabels(plotter.XYLabels{XYs: pts, Labels: labels})
	if err != nil {
		return err
	}
	for i := range lb.TextStyle {
		lb.TextStyle[i].XAlign = -0.05
	}
	p.Add(plotter.NewGrid(), sc, lb)
	widen(p)
	return p.Save(9*vg.Inch, 6*vg.Inch, path)
}

func privacyPlot(path string, ss []Summary, exact map[string]bool) error {
	p := plot.New()
	p.Title.Text = "Fidelity against released scalars (mean over the scenarios with exact ground truth)"
	p.X.Label.Text = "scalars decrypted per client and round, beside sums of ≥ k updates"
	p.Y.Label.Text = "Spearman ρ vs exact Shapley"
	type key struct{ mode, method string }
	var keys []key
	for _, s := range ss {
		k := key{s.Mode, s.Method}
		if s.Mode != "" && s.Mode != ModePlain && exact[s.Scenario] && !strings.HasPrefix(s.Method, "reference:") && !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	var pts plotter.XYs
	var labels []string
	for _, k := range keys {
		var xs, ys []float64
		for _, s := range ss {
			if s.Mode != k.mode || s.Method != k.method || !exact[s.Scenario] {
				continue
			}
			y, x := s.stat("spearman").Mean, s.stat("scalars_per_client_round").Mean
			if math.IsNaN(y) || math.IsNaN(x) {
				continue
			}
			xs, ys = append(xs, x), append(ys, y)
		}
		if len(xs) == 0 {
			continue
		}
		pts = append(pts, plotter.XY{X: mean(xs), Y: mean(ys)})
		labels = append(labels, k.mode+"/"+k.method)
	}
	return labelledScatter(p, path, pts, labels, 1, func(p *plot.Plot) { p.X.Min, p.X.Max = -0.5, p.X.Max*1.6+1 })
}

// plottedMethods are the (mode, method) pairs drawn in the values plots
// besides the reference, when present.
var plottedMethods = [][2]string{
	{ModePlain, valuation.MethodLOO},
	{ModePlain, "tmc@16"},
	{ModePlain, "gtg@16"},
	{ModePlain, valuation.MethodInfluence},
	{ModeGroups, valuation.MethodExactShapley},
	{ModeInfluence, valuation.MethodExactShapley},
	{ModeProjection, valuation.MethodExactShapley},
}

func valuesPlot(path, name string, rs []SeedRun) error {
	n := len(rs[0].Reference.Totals)
	labels := []string{}
	mean := func(get func(SeedRun) *Valued) plotter.Values {
		out := make(plotter.Values, n)
		for _, r := range rs {
			v := get(r)
			if v == nil {
				return nil
			}
			norm := 0.0
			for _, x := range v.Totals {
				norm += math.Abs(x)
			}
			if norm == 0 || math.IsNaN(norm) {
				return nil
			}
			for i, x := range v.Totals {
				out[i] += x / math.Abs(norm) / float64(len(rs))
			}
		}
		return out
	}
	var vals []plotter.Values
	if v := mean(func(r SeedRun) *Valued { return &r.Reference }); v != nil {
		vals, labels = append(vals, v), append(labels, "reference ("+rs[0].Reference.Method+")")
	}
	for _, pm := range plottedMethods {
		pm := pm
		v := mean(func(r SeedRun) *Valued {
			for k := range r.Runs {
				if r.Runs[k].Mode == pm[0] && r.Runs[k].Method == pm[1] && r.Runs[k].Err == "" {
					return &r.Runs[k]
				}
			}
			return nil
		})
		if v != nil {
			vals, labels = append(vals, v), append(labels, pm[0]+" "+pm[1])
		}
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s: each client's FedSV total / Σ|φ| (mean over %d seeds)", name, len(rs))
	p.Y.Label.Text = "φ_i / Σ|φ|"
	p.X.Label.Text = "client (corruption)"
	w := vg.Points(math.Max(2, 60/float64(len(vals)+1)*10/float64(max(n, 10))))
	for k, v := range vals {
		bc, err := plotter.NewBarChart(v, w)
		if err != nil {
			return err
		}
		bc.Color = plotutil.Color(k)
		bc.LineStyle.Width = 0
		bc.Offset = w * vg.Length(float64(k)-float64(len(vals)-1)/2)
		p.Add(bc)
		p.Legend.Add(labels[k], bc)
	}
	names := make([]string, n)
	for i := range names {
		c := ""
		if i < len(rs[0].Corruption) && rs[0].Corruption[i] != "none" {
			c = "\n" + rs[0].Corruption[i]
		}
		names[i] = fmt.Sprintf("%d%s", i, c)
	}
	if n <= 20 {
		p.NominalX(names...)
	}
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	return p.Save(vg.Length(math.Max(9, float64(n)*0.6))*vg.Inch, 6*vg.Inch, path)
}
