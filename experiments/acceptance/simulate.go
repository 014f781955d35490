package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tallyfl/tally/experiments"
)

// simJobs are the tally simulate flags of the scenarios the simulate path
// can run: the demo's two runs (Makefile DEMO_FLAGS) and the free riders
// with free-riders-bc8's training. The duplicate and Sybil items need the
// same rows without the copy, or one client's rows split, which tally
// simulate cannot deal.
var simJobs = map[string]struct {
	rounds int
	flags  []string
}{
	"demo-bc8":         {20, []string{"--dataset", "breast-cancer", "--clients", "8"}},
	"demo-corrupt-bc8": {20, []string{"--dataset", "breast-cancer", "--clients", "8", "--corrupt", "6=label-flip:0.5", "--corrupt", "7=free-rider:random"}},
	"free-riders-bc8": {10, []string{"--dataset", "breast-cancer", "--clients", "8", "--epochs", "1", "--momentum", "0", "--lr", "0.1",
		"--corrupt", "5=free-rider:zero", "--corrupt", "6=free-rider:random", "--corrupt", "7=free-rider:echo"}},
}

// simBudget is tally simulate's default budget per round.
const simBudget = 100

// simulator runs jobs with the tally binary and reads their reports.
type simulator struct {
	o     options
	bin   string
	tmp   string
	cache map[string]outcome
}

func newSimulator(ctx context.Context, o options) (*simulator, error) {
	tmp, err := os.MkdirTemp("", "tally-acceptance-")
	if err != nil {
		return nil, err
	}
	s := &simulator{o: o, bin: o.tally, tmp: tmp, cache: map[string]outcome{}}
	if s.bin == "" {
		// The module root holds experiments/scenarios.
		root := filepath.Dir(filepath.Dir(o.scenarios))
		s.bin = filepath.Join(tmp, "tally")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", s.bin, "./cmd/tally")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			os.RemoveAll(tmp)
			return nil, fmt.Errorf("go build ./cmd/tally in %s: %v\n%s", root, err, out)
		}
	}
	return s, nil
}

func (s *simulator) close() { os.RemoveAll(s.tmp) }

// simReport is the part of tally simulate's JSON report the checks read.
type simReport struct {
	Rounds []struct {
		Contributors int `json:"contributors"`
	} `json:"rounds"`
	Clients []struct {
		ID         string `json:"id"`
		Corruption string `json:"corruption"`
		Samples    int64  `json:"samples"`
	} `json:"clients"`
	Contributions []struct {
		Client string  `json:"client"`
		Value  float64 `json:"value"`
		Payout float64 `json:"payout"`
	} `json:"contributions"`
}

// job runs (or recalls) one scenario in one setup on one seed.
func (s *simulator) job(ctx context.Context, name string, su setup, seed uint64) (outcome, error) {
	key := fmt.Sprintf("%s|%s|%d", name, su, seed)
	if o, ok := s.cache[key]; ok {
		return o, nil
	}
	j, ok := simJobs[name]
	if !ok {
		return outcome{}, fmt.Errorf("tally simulate cannot run %s", name)
	}
	rounds := j.rounds
	if s.o.rounds > 0 {
		rounds = s.o.rounds
	}
	path := filepath.Join(s.tmp, strings.ReplaceAll(key, "|", "-")+".json")
	args := append([]string{"simulate"}, j.flags...)
	args = append(args, "--rounds", strconv.Itoa(rounds), "--seed", strconv.FormatUint(seed, 10),
		"--secure-aggregation", su.secure, "--valuation-mode", su.mode, "--valuation-method", method,
		"--budget", strconv.Itoa(simBudget), "--baseline-share", strconv.FormatFloat(s.o.share, 'g', -1, 64),
		"--centralised=false", "--quiet", "--report", path)
	start := time.Now()
	cmd := exec.CommandContext(ctx, s.bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return outcome{}, fmt.Errorf("tally %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	if s.o.progress != nil {
		fmt.Fprintf(s.o.progress, "tally simulate %s %s seed %d: %s\n", name, su, seed, time.Since(start).Round(100*time.Millisecond))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return outcome{}, err
	}
	var rep simReport
	if err := json.Unmarshal(b, &rep); err != nil {
		return outcome{}, fmt.Errorf("%s: %w", path, err)
	}
	o, err := rep.outcome(rounds, s.o.share)
	if err != nil {
		return outcome{}, fmt.Errorf("%s %s seed %d: %w", name, su, seed, err)
	}
	s.cache[key] = o
	return o, nil
}

// outcome reads the report's contributions in client order, payouts as
// shares of the job's budget (simBudget × rounds), and the baseline each
// client was paid: the round's baseline pot split among its contributors by
// their rows (samples).
func (rep simReport) outcome(rounds int, share float64) (outcome, error) {
	budget := float64(simBudget * rounds)
	at := map[string]int{}
	var o outcome
	for i, c := range rep.Clients {
		at[c.ID] = i
		corr := c.Corruption
		if corr == "" {
			corr = "none"
		}
		o.corruption = append(o.corruption, corr)
	}
	o.values, o.payouts = make([]float64, len(rep.Clients)), make([]float64, len(rep.Clients))
	seen := 0
	for _, c := range rep.Contributions {
		i, ok := at[c.Client]
		if !ok {
			return o, fmt.Errorf("contribution of unknown client %q", c.Client)
		}
		o.values[i], o.payouts[i] = c.Value, c.Payout/budget
		seen++
	}
	if seen != len(rep.Clients) || len(rep.Rounds) != rounds {
		return o, fmt.Errorf("%d contributions of %d clients, %d of %d rounds", seen, len(rep.Clients), len(rep.Rounds), rounds)
	}
	var rows float64
	for _, c := range rep.Clients {
		rows += float64(c.Samples)
	}
	o.baseline = make([]float64, len(rep.Clients))
	for _, r := range rep.Rounds {
		if r.Contributors != len(rep.Clients) {
			return o, fmt.Errorf("a round had %d of %d contributors: the baseline differs by client", r.Contributors, len(rep.Clients))
		}
		for i, c := range rep.Clients {
			o.baseline[i] += share * simBudget * float64(c.Samples) / rows / budget
		}
	}
	return o, nil
}

func (s *simulator) item(ctx context.Context, item string) ([]line, error) {
	var out []line
	each := func(names []string, f func(name string, su setup, seed uint64) (bool, string, error)) {
		for _, name := range names {
			for _, su := range s.o.setups {
				for _, seed := range s.o.seeds {
					l := line{item: item, scenario: name, setup: su, seed: seed}
					var err error
					l.pass, l.figures, err = f(name, su, seed)
					if err != nil {
						l.pass, l.figures = false, err.Error()
					}
					out = append(out, l)
				}
			}
		}
	}
	plain := func(name string, f func(outcome) (bool, string)) func(string, setup, uint64) (bool, string, error) {
		return func(name string, su setup, seed uint64) (bool, string, error) {
			o, err := s.job(ctx, name, su, seed)
			if err != nil {
				return false, "", err
			}
			pass, fig := f(o)
			return pass, fig, nil
		}
	}
	switch item {
	case itemInversions:
		each(demoScenarios, plain("", checkInversions))
	case itemFreeRiders:
		each(freeRiderScenarios, plain("", checkFreeRiders))
	case itemDuplicate, itemSybil:
		names := duplicateScenarios
		why := "tally simulate cannot run the same rows without the copy"
		if item == itemSybil {
			names, why = []string{sybilScenario}, "tally simulate cannot split one client's rows among identities"
		}
		for _, name := range names {
			for _, su := range s.o.setups {
				for _, seed := range s.o.seeds {
					out = append(out, line{item: item, scenario: name, setup: su, seed: seed, skip: true, figures: why + " (run without --simulate)"})
				}
			}
		}
	case itemSpearman:
		// The reference: the same job without encryption, valued in plain
		// mode by exact Shapley (its credited totals).
		each([]string{spearmanScenario}, func(name string, su setup, seed uint64) (bool, string, error) {
			ref, err := s.job(ctx, name, setup{"none", experiments.ModePlain}, seed)
			if err != nil {
				return false, "", err
			}
			o, err := s.job(ctx, name, su, seed)
			if err != nil {
				return false, "", err
			}
			pass, fig := checkSpearman(o, ref.values)
			return pass, fig, nil
		})
	default:
		return nil, fmt.Errorf("unknown item %q", item)
	}
	return out, nil
}
