// Package payout is the arithmetic of what clients are paid.
//
// A job's (or period's) budget is paid in two parts (Period): a baseline
// share every round, split among the round's valid submissions by their
// rows (a Sybil split gains nothing from it),
// and a value part held in escrow and settled once the period is over,
// in proportion to max(V_i, 0) (Settle, with the split of Payouts),
// levelled where the baselines would otherwise pay a client more in all
// than one of higher value (Level). V_i
// is the client's total over the period (Totals): each round's values
// credited (Credit: a round whose values sum to ≤ 0 made the model no
// better and credits nobody, while whoever made it worse is debited) and
// summed with the job's freshness decay, negative rounds netting against
// positive ones. Because nothing is paid before it is owed for good, no
// payout is ever clawed back. Quotas issues credits the same way into
// per-client Baskets of fixed capacity whose overflow is lost, so that
// value earns usage but cannot be hoarded.
//
// It is pure computation, apart from the bbolt store of package ledger,
// so that the round engine can use it.
package payout
