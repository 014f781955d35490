package ledger

import (
	"math"
	"sort"
)

// Standing is one client's total over a set of receipts: what `tally
// scores` prints and the dashboard's contribution table shows, so that the
// two can never disagree.
type Standing struct {
	Client string `json:"client"`
	// Rounds is the number of receipts the client holds.
	Rounds int     `json:"rounds"`
	Value  float64 `json:"value"`
	// StdErr adds the rounds' standard errors in quadrature (the rounds'
	// estimates are independent).
	StdErr float64 `json:"stderr"`
	// Rank is 1 for the highest value; ties go by client id.
	Rank   int     `json:"rank"`
	Payout float64 `json:"payout"`
	Quota  float64 `json:"quota"`
}

// Standings totals rs per client: values, payouts and quota credits
// summed, standard errors in quadrature, sorted by rank.
func Standings(rs []Receipt) []Standing {
	by := map[string]*Standing{}
	se2 := map[string]float64{}
	for _, r := range rs {
		s := by[r.Client]
		if s == nil {
			s = &Standing{Client: r.Client}
			by[r.Client] = s
		}
		s.Rounds++
		s.Value += r.Value
		se2[r.Client] += r.StdErr * r.StdErr
		s.Payout += r.Payout
		s.Quota += r.Quota
	}
	out := make([]Standing, 0, len(by))
	for id, s := range by {
		s.StdErr = math.Sqrt(se2[id])
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Value != out[j].Value {
			return out[i].Value > out[j].Value
		}
		return out[i].Client < out[j].Client
	})
	for i := range out {
		out[i].Rank = i + 1
	}
	return out
}
