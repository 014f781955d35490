package engine

import (
	"fmt"
	"slices"

	"github.com/tallyfl/tally/aggregation"
)

// CheckDecryptions audits what a secure job decrypted, round by round,
// against docs/DESIGN.md §3: every whole decryption sums at least k client updates;
// no two whole decryptions of the same round differ by exactly one client
// (their difference would be that client's update); a decryption of fewer
// than k contributors is only ever one client's influence coefficient (once
// per client and multiplier vector in a round). It returns the first violation.
func CheckDecryptions(k int, history []RoundRecord) error {
	for _, r := range history {
		influence := map[string]int{}
		var whole []DecryptionRecord
		for _, d := range r.Decryptions {
			if d.Contributors != len(d.Clients) {
				return fmt.Errorf("round %d attempt %d: a %s decryption claims %d contributors and lists %d", r.Round, r.Attempt, d.Purpose, d.Contributors, len(d.Clients))
			}
			if d.Purpose == aggregation.PurposeInfluence {
				if len(d.Clients) != 1 {
					return fmt.Errorf("round %d: an influence decryption of %d clients", r.Round, len(d.Clients))
				}
				// One scalar per client and multiplier vector (the
				// projection mode's several vectors each once).
				key := d.Clients[0] + "|" + d.Gradient
				influence[key]++
				if influence[key] > 1 {
					return fmt.Errorf("round %d: client %s's influence decrypted twice", r.Round, d.Clients[0])
				}
				continue
			}
			if d.Contributors < k {
				return fmt.Errorf("round %d: a %s decryption of %d contributors, fewer than k = %d", r.Round, d.Purpose, d.Contributors, k)
			}
			for _, o := range whole {
				if differByOne(o.Clients, d.Clients) {
					return fmt.Errorf("round %d: decryptions of %v and %v differ by one client, whose update their difference reveals", r.Round, o.Clients, d.Clients)
				}
			}
			whole = append(whole, d)
		}
	}
	return nil
}

func differByOne(a, b []string) bool {
	onlyA, onlyB := 0, 0
	for _, x := range a {
		if !slices.Contains(b, x) {
			onlyA++
		}
	}
	for _, x := range b {
		if !slices.Contains(a, x) {
			onlyB++
		}
	}
	return onlyA+onlyB == 1
}
