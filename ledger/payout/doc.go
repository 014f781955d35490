// Package payout is the arithmetic of what clients are paid: Payouts
// splits a round's budget in proportion to max(φ_i, 0) with an optional
// baseline share for every valid submission (docs/DESIGN.md §4); Quotas
// issues credits the same way into per-client Baskets of fixed capacity
// whose overflow is lost, so that value earns usage but cannot be hoarded.
//
// It is pure computation, apart from the bbolt store of package ledger,
// so that the round engine can use it.
package payout
