package valuation

import (
	"context"
	"errors"
	"fmt"
)

// Sentinel errors. Callers check them with errors.Is; the messages wrapped
// around them name the player, coalition or field at fault.
var (
	ErrPlayers        = errors.New("valuation: player count out of range")
	ErrTooManyPlayers = errors.New("valuation: too many players for an exact method")
	ErrCoalition      = errors.New("valuation: coalition names a player outside the game")
	ErrNotFinite      = errors.New("valuation: utility is not a finite number")
	ErrUtilityPanic   = errors.New("valuation: utility panicked")
	ErrLength         = errors.New("valuation: input lengths do not match")
	ErrWeight         = errors.New("valuation: weight must be positive and finite")
	ErrInput          = errors.New("valuation: input is not finite")
	ErrScorer         = errors.New("valuation: scorer failed")
	ErrConfig         = errors.New("valuation: invalid config")
	ErrUnknownMethod  = errors.New("valuation: unknown method")
	ErrVectorMethod   = errors.New("valuation: method takes vectors, not a game")
	ErrBudget         = errors.New("valuation: evaluation budget too small")
	ErrDecay          = errors.New("valuation: decay must be in (0, 1]")
)

// Game is a cooperative game with transferable utility: Players() players and
// a utility for every coalition of them.
//
// Contract: Players is constant and in [1, MaxPlayers]. Utility must be safe
// for concurrent calls (the Evaluator calls it from a worker pool) unless the
// game's documentation says otherwise, in which case wrap it in an Evaluator
// with one worker. Utility must be deterministic (the same coalition gives the
// same bits, whatever the order or concurrency of calls) so that estimates are
// reproducible from their seed, return a finite number, and return ctx.Err()
// (or an error wrapping it) promptly when ctx is cancelled. Utility of the
// empty coalition is the baseline every marginal contribution is measured
// from; it need not be zero.
type Game interface {
	Players() int
	Utility(ctx context.Context, s Coalition) (float64, error)
}

// GameFunc adapts a pure function of a coalition to a Game. The function must
// be safe for concurrent calls.
type GameFunc struct {
	N int
	F func(s Coalition) float64
}

// Players returns g.N.
func (g GameFunc) Players() int { return g.N }

// Utility returns g.F(s).
func (g GameFunc) Utility(ctx context.Context, s Coalition) (float64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return g.F(s), nil
}

// checkPlayers validates a player count.
func checkPlayers(n int) error {
	if n < 1 || n > MaxPlayers {
		return fmt.Errorf("%w: %d players, want 1 to %d", ErrPlayers, n, MaxPlayers)
	}
	return nil
}
