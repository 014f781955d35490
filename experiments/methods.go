package experiments

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/tallyfl/tally/valuation"
)

// Privacy modes, as the coordinator values rounds (engine/valuation.go).
const (
	// ModePlain values clients from their updates in the clear.
	ModePlain = "plain"
	// ModeGroups values a seeded partition into groups of ≥ k clients from
	// the groups' aggregates and shares each group's value by weight.
	ModeGroups = "groups"
	// ModeInfluence values the first-order surrogate game built from one
	// scalar a_i = ⟨∇L_val, n_i·Δ_i⟩ per client.
	ModeInfluence = "influence"
	// ModeProjection values the line-search game of each client's update
	// projected onto public vectors (the round's total, validation
	// gradients along its line, per-class gradient parts), from the
	// clients' inner products with them (valuation.NewProjectionGame).
	ModeProjection = "projection"
)

// Modes lists every mode, in the order the tables use.
func Modes() []string { return []string{ModePlain, ModeGroups, ModeInfluence, ModeProjection} }

// Method is a valuation method with its per-round budget. Its text form is
// the method name, optionally followed by "@k": a budget of k·n distinct
// utility evaluations per round for a game of n players (the sampled
// methods' only stopping rule then, so each method is compared at the cost
// it is given). Without "@k" a sampled method runs at the library's defaults
// (200 permutations).
type Method struct {
	Name      string
	PerPlayer int
}

// String returns the text form ParseMethod reads.
func (m Method) String() string {
	if m.PerPlayer == 0 {
		return m.Name
	}
	return m.Name + "@" + strconv.Itoa(m.PerPlayer)
}

// Vector reports whether m is a vector method (cgsv, influence), computed
// from updates or scalars rather than a game.
func (m Method) Vector() bool { return slices.Contains(valuation.VectorMethods(), m.Name) }

// Exact reports whether m enumerates every coalition.
func (m Method) Exact() bool {
	return m.Name == valuation.MethodExactShapley || m.Name == valuation.MethodExactBanzhaf
}

// sampled reports whether a budget means anything for m.
func (m Method) sampled() bool {
	switch m.Name {
	case valuation.MethodMonteCarlo, valuation.MethodTMC, valuation.MethodGTG, valuation.MethodBanzhaf:
		return true
	}
	return false
}

// ParseMethod reads a method's text form; errors wrap ErrMethod.
func ParseMethod(s string) (Method, error) {
	name, budget, hasBudget := strings.Cut(strings.TrimSpace(s), "@")
	known := append(valuation.Methods(), valuation.VectorMethods()...)
	if !slices.Contains(known, name) {
		return Method{}, fmt.Errorf("%w: %q is not one of %v", ErrMethod, name, known)
	}
	m := Method{Name: name}
	if hasBudget {
		k, err := strconv.Atoi(budget)
		if err != nil || k < 1 {
			return Method{}, fmt.Errorf("%w: %q: the budget after @ must be a positive integer (evaluations per player per round)", ErrMethod, s)
		}
		if !m.sampled() {
			return Method{}, fmt.Errorf("%w: %q: only sampled methods (monte-carlo, tmc, gtg, banzhaf) take a budget", ErrMethod, s)
		}
		m.PerPlayer = k
	}
	return m, nil
}

// ParseMethods reads a comma-separated list of methods.
func ParseMethods(list []string) ([]Method, error) {
	var out []Method
	for _, item := range list {
		for _, s := range strings.Split(item, ",") {
			if strings.TrimSpace(s) == "" {
				continue
			}
			m, err := ParseMethod(s)
			if err != nil {
				return nil, err
			}
			out = append(out, m)
		}
	}
	return out, nil
}

// ParseModes reads a comma-separated list of modes; errors wrap ErrMode.
func ParseModes(list []string) ([]string, error) {
	var out []string
	for _, item := range list {
		for _, s := range strings.Split(item, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			if !slices.Contains(Modes(), s) {
				return nil, fmt.Errorf("%w: %q is not one of %v", ErrMode, s, Modes())
			}
			out = append(out, s)
		}
	}
	return out, nil
}

// DefaultMethods is the method list of the default suite: the exact values,
// leave-one-out, each sampled method at two budgets (4 and 16 evaluations
// per player per round: at n = 10, 4% and 16% of exact Shapley's 1,024), and
// the two gradient signals.
func DefaultMethods() []Method {
	var out []Method
	for _, s := range []string{
		"exact-shapley", "exact-banzhaf", "loo",
		"monte-carlo@4", "monte-carlo@16", "tmc@4", "tmc@16", "gtg@4", "gtg@16", "banzhaf@16",
		"cgsv", "influence",
	} {
		m, err := ParseMethod(s)
		if err != nil {
			panic(err) // the list above is fixed
		}
		out = append(out, m)
	}
	return out
}
