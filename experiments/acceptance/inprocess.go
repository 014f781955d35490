package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/tallyfl/tally/experiments"
)

// The scenarios of each item.
var (
	demoScenarios      = []string{"demo-bc8", "demo-corrupt-bc8"}
	freeRiderScenarios = []string{"free-riders-bc8", "demo-corrupt-bc8"}
	duplicateScenarios = []string{"duplicates-retrained-bc5", "duplicates-bc5"}
	sybilScenario      = "sybil-bc5"
	spearmanScenario   = "demo-corrupt-bc8"
)

// method is what every job is valued with: the coordinator's default for
// these sizes (at most 16 clients).
const method = "exact-shapley"

// inProcess runs the scenarios with experiments.Run, each once for every
// seed and mode, and pays them with experiments.JobPay.
type inProcess struct {
	o     options
	cache map[string][]experiments.SeedRun
}

// loadScenario reads a scenario: the demo's are embedded here, the others
// are the shipped files.
func loadScenario(o options, name string) (experiments.Scenario, error) {
	var sc experiments.Scenario
	var err error
	if b, e := embedded.ReadFile("scenarios/" + name + ".yaml"); e == nil {
		sc, err = experiments.ParseScenario(name+".yaml", b)
	} else {
		sc, err = experiments.LoadScenario(filepath.Join(o.scenarios, name+".yaml"))
	}
	if err != nil {
		return sc, err
	}
	sc.Seeds = o.seeds
	if o.rounds > 0 {
		sc.Rounds = o.rounds
	}
	return sc, nil
}

func (p *inProcess) runs(ctx context.Context, name string) ([]experiments.SeedRun, error) {
	if rs, ok := p.cache[name]; ok {
		return rs, nil
	}
	sc, err := loadScenario(p.o, name)
	if err != nil {
		return nil, err
	}
	var modes []string
	for _, s := range p.o.setups {
		if !slices.Contains(modes, s.mode) {
			modes = append(modes, s.mode)
		}
	}
	ms, err := experiments.ParseMethods([]string{method})
	if err != nil {
		return nil, err
	}
	rs, err := experiments.Run(ctx, []experiments.Scenario{sc}, experiments.Options{Methods: ms, Modes: modes, Progress: p.o.progress})
	if err != nil {
		return nil, err
	}
	if p.cache == nil {
		p.cache = map[string][]experiments.SeedRun{}
	}
	p.cache[name] = rs
	return rs, nil
}

// pick returns the index in sr.Runs of the setup's mode valued by method.
func pick(sr experiments.SeedRun, mode string) (int, error) {
	for k, v := range sr.Runs {
		if v.Mode == mode && v.Method == method {
			if v.Err != "" {
				return k, fmt.Errorf("%s seed %d, %s %s: %s", sr.Scenario, sr.Seed, mode, method, v.Err)
			}
			return k, nil
		}
	}
	return -1, fmt.Errorf("%s seed %d: no %s %s run", sr.Scenario, sr.Seed, mode, method)
}

// outcomeOf pays a valued run by the job's rules.
func outcomeOf(v experiments.Valued, corruption []string, share float64) (outcome, error) {
	p, err := experiments.JobPay(v, share)
	if err != nil {
		return outcome{}, err
	}
	return outcome{corruption: corruption, values: p.Values, payouts: p.Payouts, baseline: p.Baseline}, nil
}

// each calls f for every run of the scenarios and every setup, with the
// index of the setup's run in sr.Runs, and collects its lines.
func (p *inProcess) each(ctx context.Context, item string, names []string, f func(sr experiments.SeedRun, k int) (bool, string, error)) ([]line, error) {
	var out []line
	for _, name := range names {
		rs, err := p.runs(ctx, name)
		if err != nil {
			return nil, err
		}
		for _, su := range p.o.setups {
			for _, sr := range rs {
				l := line{item: item, scenario: name, setup: su, seed: sr.Seed}
				k, err := pick(sr, su.mode)
				if err == nil {
					l.pass, l.figures, err = f(sr, k)
				}
				if err != nil {
					l.pass, l.figures = false, err.Error()
				}
				out = append(out, l)
			}
		}
	}
	return out, nil
}

func (p *inProcess) item(ctx context.Context, item string) ([]line, error) {
	switch item {
	case itemInversions, itemFreeRiders:
		names, f := demoScenarios, checkInversions
		if item == itemFreeRiders {
			names, f = freeRiderScenarios, checkFreeRiders
		}
		return p.each(ctx, item, names, func(sr experiments.SeedRun, k int) (bool, string, error) {
			o, err := outcomeOf(sr.Runs[k], sr.Corruption, p.o.share)
			if err != nil {
				return false, "", err
			}
			pass, fig := f(o)
			return pass, fig, nil
		})
	case itemDuplicate:
		return p.each(ctx, item, duplicateScenarios, func(sr experiments.SeedRun, k int) (bool, string, error) {
			if sr.AloneRef == nil || k >= len(sr.AloneRuns) {
				return false, "", fmt.Errorf("%s has no run without the copy", sr.Scenario)
			}
			with, err := outcomeOf(sr.Runs[k], sr.Corruption, p.o.share)
			if err != nil {
				return false, "", err
			}
			without, err := outcomeOf(sr.AloneRuns[k], nil, p.o.share)
			if err != nil {
				return false, "", err
			}
			pass, fig := checkDuplicate(with, without, sr.Duplicates, sr.AloneOf)
			return pass, fig, nil
		})
	case itemSybil:
		return p.each(ctx, item, []string{sybilScenario}, func(sr experiments.SeedRun, k int) (bool, string, error) {
			if sr.SybilRef == nil || k >= len(sr.SybilRuns) {
				return false, "", fmt.Errorf("%s has no split run", sr.Scenario)
			}
			base, err := outcomeOf(sr.Runs[k], sr.Corruption, p.o.share)
			if err != nil {
				return false, "", err
			}
			split, err := outcomeOf(sr.SybilRuns[k], nil, p.o.share)
			if err != nil {
				return false, "", err
			}
			pass, fig := checkSybil(base, split, sr.SybilClient, sr.Sybils)
			return pass, fig, nil
		})
	case itemSpearman:
		return p.each(ctx, item, []string{spearmanScenario}, func(sr experiments.SeedRun, k int) (bool, string, error) {
			o, err := outcomeOf(sr.Runs[k], sr.Corruption, p.o.share)
			if err != nil {
				return false, "", err
			}
			// The reference is exact Shapley credited by the job's rule
			// (payout.Totals: a round that made the model no better credits
			// nobody), as --simulate takes it from the plain job's report;
			// ρ against the raw sums of the rounds is printed beside it.
			ref, err := outcomeOf(sr.Reference, sr.Corruption, p.o.share)
			if err != nil {
				return false, "", err
			}
			pass, fig := checkSpearman(o, ref.values)
			raw := experiments.PaySpearman(o.payouts, sr.Reference.Totals, honestOf(o))
			return pass, fig + fmt.Sprintf("; ρ against the uncredited sums of its rounds %.3f", raw), nil
		})
	}
	return nil, fmt.Errorf("unknown item %q", item)
}
