package ledger

import (
	"cmp"
	"math"
	"slices"
	"sort"

	"github.com/tallyfl/tally/ledger/payout"
)

// Standing is one client's total over a set of receipts: what `tally
// scores` prints and the dashboard's contribution table shows, so that the
// two can never disagree.
type Standing struct {
	Client string `json:"client"`
	// Rounds is the number of round receipts the client holds.
	Rounds int `json:"rounds"`
	// Value is the client's total as the coordinator computes it
	// (payout.Totals): the rounds' credited values summed with the job's
	// decay, so a round's value counts decay^(R−r) after R valued rounds,
	// and a settled period counted by its settlement's total.
	Value float64 `json:"value"`
	// StdErr adds the rounds' standard errors in quadrature (the rounds'
	// estimates are independent), with the same decay.
	StdErr float64 `json:"stderr"`
	// Rank is 1 for the highest value; ties go by client id.
	Rank int `json:"rank"`
	// Payout and Quota sum the rounds' baselines and the settlements'
	// value parts.
	Payout float64 `json:"payout"`
	Quota  float64 `json:"quota"`
}

// Standings totals rs per client: values credited and summed with the
// decay the receipts record (1 when they record none), standard errors in
// quadrature, payouts and quota credits of rounds and settlements summed,
// sorted by rank. A round's values are credited by the round's realised
// gain, so rs must hold every receipt of each round it covers (a
// coordinator's ledger does; one client's file does not).
//
// Where a settlement receipt covers a client's rounds, its value — the
// total the period was paid on, with copies valued as one and values
// capped per declared row (valuation.Redundancy, CapPerWeight) — replaces
// the sum of those rounds' receipts, which carry each round's values
// before the job-level merge; it is decayed by the valued rounds after the
// period, as the coordinator decays it. Without settlements the total is
// the rounds' sum as before.
func Standings(rs []Receipt) []Standing {
	by := map[string]*Standing{}
	get := func(id string) *Standing {
		s := by[id]
		if s == nil {
			s = &Standing{Client: id}
			by[id] = s
		}
		return s
	}
	type roundKey struct {
		job   string
		round int
	}
	rounds := map[roundKey][]Receipt{}
	var settlements []Receipt
	decay := 1.0
	for _, r := range rs {
		s := get(r.Client)
		s.Payout += r.Payout
		s.Quota += r.Quota
		if r.Kind != "" {
			if r.Kind == KindSettlement {
				settlements = append(settlements, r)
			}
			continue
		}
		if r.Decay > 0 {
			decay = r.Decay
		}
		s.Rounds++
		k := roundKey{r.Job, r.Round}
		rounds[k] = append(rounds[k], r)
	}
	keys := make([]roundKey, 0, len(rounds))
	for k := range rounds {
		keys = append(keys, k)
	}
	order := func(a, b roundKey) int {
		return cmp.Or(cmp.Compare(a.job, b.job), cmp.Compare(a.round, b.round))
	}
	slices.SortFunc(keys, order)
	totals, err := payout.NewTotals(decay)
	if err != nil {
		// A receipt's decay is within [0, 1] (AppendReceipts checks it) and
		// 0 was replaced: (0, 1] always.
		panic(err)
	}
	// settled[client] lists the (job, from, through) periods a settlement
	// receipt states the client's total for.
	type period struct {
		job           string
		from, through int
	}
	settled := map[string][]period{}
	for _, st := range settlements {
		settled[st.Client] = append(settled[st.Client], period{st.Job, st.FromRound, st.Round})
	}
	covered := func(id string, k roundKey) bool {
		for _, p := range settled[id] {
			if p.job == k.job && k.round >= p.from && k.round <= p.through {
				return true
			}
		}
		return false
	}
	// value[id] is the client's decayed total over rounds no settlement
	// covers; each round decays what came before it.
	value := map[string]float64{}
	for _, k := range keys {
		round := rounds[k]
		slices.SortFunc(round, func(a, b Receipt) int { return cmp.Compare(a.Client, b.Client) })
		ids, vals, ses := make([]string, len(round)), make([]float64, len(round)), make([]float64, len(round))
		for i, r := range round {
			ids[i], vals[i], ses[i] = r.Client, r.Value, r.StdErr
		}
		if err := totals.AddRound(ids, vals, ses); err != nil {
			panic(err) // distinct clients and finite values: the index and AppendReceipts guarantee both
		}
		for id := range value {
			value[id] *= decay
		}
		for i, c := range payout.Credit(vals) {
			if !covered(ids[i], k) {
				value[ids[i]] += c
			}
		}
	}
	for _, st := range settlements {
		// The settlement's total is as of its last round; the valued
		// rounds after it decay it further.
		after := len(keys) - sort.Search(len(keys), func(i int) bool {
			return order(keys[i], roundKey{st.Job, st.Round}) > 0
		})
		value[st.Client] += st.Value * math.Pow(decay, float64(after))
	}
	out := make([]Standing, 0, len(by))
	for id, s := range by {
		_, s.StdErr, _, _ = totals.Get(id)
		s.Value = value[id]
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
