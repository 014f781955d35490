package valuation

import (
	"math/bits"
	"strconv"
	"strings"
)

// MaxPlayers is the largest number of players a Game may have: a Coalition is
// a 64-bit set and the grand coalition of n players is 1<<n − 1, which must not
// overflow.
const MaxPlayers = 63

// Coalition is a set of players as a bitset: player i is a member when bit i
// is set. Players are numbered 0 … n−1 with n ≤ MaxPlayers.
type Coalition uint64

// Grand returns the coalition of all n players. It panics if n is outside
// [0, MaxPlayers], a caller bug.
func Grand(n int) Coalition {
	if n < 0 || n > MaxPlayers {
		panic("valuation: Grand: player count out of range")
	}
	return Coalition(1)<<uint(n) - 1
}

// Singleton returns the coalition {i}.
func Singleton(i int) Coalition { return Coalition(1) << uint(i) }

// Of returns the coalition of the given players.
func Of(players ...int) Coalition {
	var s Coalition
	for _, p := range players {
		s |= Singleton(p)
	}
	return s
}

// Has reports whether player i is in s.
func (s Coalition) Has(i int) bool { return s&Singleton(i) != 0 }

// With returns s ∪ {i}.
func (s Coalition) With(i int) Coalition { return s | Singleton(i) }

// Without returns s ∖ {i}.
func (s Coalition) Without(i int) Coalition { return s &^ Singleton(i) }

// Size is |s|.
func (s Coalition) Size() int { return bits.OnesCount64(uint64(s)) }

// Members returns the players of s in increasing order.
func (s Coalition) Members() []int {
	out := make([]int, 0, s.Size())
	for r := uint64(s); r != 0; r &= r - 1 {
		out = append(out, bits.TrailingZeros64(r))
	}
	return out
}

// String formats s as {0,3,5}.
func (s Coalition) String() string {
	var b strings.Builder
	b.WriteByte('{')
	for k, p := range s.Members() {
		if k > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(p))
	}
	b.WriteByte('}')
	return b.String()
}
