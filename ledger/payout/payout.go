package payout

import (
	"errors"
	"fmt"
	"math"
)

// Sentinel errors of payouts, quotas and baskets.
var (
	// ErrAllocation means the parameters of Payouts or Quotas are invalid.
	ErrAllocation = errors.New("payout: invalid allocation parameters")
	// ErrAmount means an amount is negative or not finite.
	ErrAmount = errors.New("payout: amount must be finite and non-negative")
	// ErrInsufficientQuota means a Spend exceeds the basket's balance.
	ErrInsufficientQuota = errors.New("payout: insufficient quota")
)

// Payouts splits one round's budget among the clients (docs/DESIGN.md §4). With
// s = baselineShare, V = {i : valid[i]}, m = |V| and P = Σ_{j∈V} max(φ_j, 0):
//
//	payout_i = (1−s)·budget · max(φ_i, 0) / P   +   s·budget / m     for i ∈ V
//	payout_i = 0                                                      for i ∉ V
//
// The first term is the value part: a client with a negative or zero
// value gets nothing from it, and an invalid submission gets nothing at
// all whatever its value. The second term is the baseline, paid equally
// to every valid submission. When P = 0 (no valid client has a positive
// value) the value part is not paid; when m = 0 the baseline is not paid.
// What is not paid is returned as unspent and stays with the job's owner;
// Σ payout_i + unspent = budget up to rounding.
//
// valid nil means every submission is valid; otherwise it must have
// len(values) entries. The values of invalid submissions are ignored (they
// may be NaN); valid ones must be finite. budget must be finite and
// non-negative and baselineShare within [0, 1].
func Payouts(values []float64, budget, baselineShare float64, valid []bool) (payouts []float64, unspent float64, err error) {
	return split(values, budget, baselineShare, valid)
}

// Quotas returns the credits issued to each client's basket for one period:
// the split of Payouts with perRoundCredit in place of the budget, where
// values are what the job credits for (the round's value, or the value
// accumulated so far). Credits not issued (no positive value, or no valid
// submission) are simply not issued. Pass each credit to Basket.Credit.
func Quotas(values []float64, perRoundCredit, baselineShare float64, valid []bool) ([]float64, error) {
	credits, _, err := split(values, perRoundCredit, baselineShare, valid)
	return credits, err
}

func split(values []float64, total, share float64, valid []bool) ([]float64, float64, error) {
	isValid := func(i int) bool { return valid == nil || valid[i] }
	switch {
	case valid != nil && len(valid) != len(values):
		return nil, 0, fmt.Errorf("%w: %d validity flags for %d values", ErrAllocation, len(valid), len(values))
	case math.IsNaN(total) || math.IsInf(total, 0) || total < 0:
		return nil, 0, fmt.Errorf("%w: total %v must be finite and non-negative", ErrAllocation, total)
	case math.IsNaN(share) || share < 0 || share > 1:
		return nil, 0, fmt.Errorf("%w: baseline share %v must be within [0, 1]", ErrAllocation, share)
	}
	var pos float64
	m := 0
	for i, v := range values {
		if !isValid(i) {
			continue
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, 0, fmt.Errorf("%w: value %d is %v", ErrAllocation, i, v)
		}
		m++
		pos += max(v, 0)
	}
	valuePart := (1 - share) * total
	basePart := share * total
	unspent := 0.0
	if pos == 0 {
		unspent += valuePart
		valuePart = 0
	}
	perBase := 0.0
	if m == 0 {
		unspent += basePart
	} else {
		perBase = basePart / float64(m)
	}
	out := make([]float64, len(values))
	for i, v := range values {
		if !isValid(i) {
			continue
		}
		out[i] = perBase
		if pos > 0 {
			out[i] += valuePart * max(v, 0) / pos
		}
	}
	return out, unspent, nil
}

// Basket is a client's quota: a balance of credits that never exceeds
// Capacity, so that nobody can hoard credits over many periods
// (docs/DESIGN.md §4). Its zero value has no capacity and loses every credit.
type Basket struct {
	Capacity float64 `json:"capacity"`
	Balance  float64 `json:"balance"`
}

// Credit adds amount up to the capacity and reports how much was credited
// and how much overflowed; the overflow is lost, not carried over. A
// balance already above the capacity (after the capacity was lowered) is
// kept but takes no more credit. It panics if amount is negative or not
// finite: credits come from Quotas, which never produces such a value.
func (b *Basket) Credit(amount float64) (credited, overflow float64) {
	if math.IsNaN(amount) || math.IsInf(amount, 0) || amount < 0 {
		panic(fmt.Sprintf("ledger: basket credit %v", amount))
	}
	room := max(b.Capacity-b.Balance, 0)
	credited = min(amount, room)
	b.Balance += credited
	return credited, amount - credited
}

// Spend takes amount from the balance. It fails with ErrInsufficientQuota,
// leaving the balance unchanged, if amount exceeds the balance, and with
// ErrAmount if amount is negative or not finite.
func (b *Basket) Spend(amount float64) error {
	if math.IsNaN(amount) || math.IsInf(amount, 0) || amount < 0 {
		return fmt.Errorf("%w: spend %v", ErrAmount, amount)
	}
	if amount > b.Balance {
		return fmt.Errorf("%w: spend %v, balance %v", ErrInsufficientQuota, amount, b.Balance)
	}
	b.Balance -= amount
	return nil
}
