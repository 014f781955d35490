package coordinator

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/valuation"
)

// gameRecorder remembers each round's game as it was estimated: every
// coalition a method evaluated and its utility (ServerConfig.ExportGames).
type gameRecorder struct {
	mu    sync.Mutex
	games map[int]*recordedGame
}

type recordedGame struct {
	g    valuation.Game
	mu   sync.Mutex
	seen map[valuation.Coalition]float64
}

func (r *recordedGame) Players() int { return r.g.Players() }

func (r *recordedGame) Utility(ctx context.Context, s valuation.Coalition) (float64, error) {
	u, err := r.g.Utility(ctx, s)
	if err == nil {
		r.mu.Lock()
		r.seen[s] = u
		r.mu.Unlock()
	}
	return u, err
}

// wrap records round's game (the last one estimated for the round wins:
// a failed attempt's game is replaced by its retry's).
func (gr *gameRecorder) wrap(round int, g valuation.Game) valuation.Game {
	if gr == nil {
		return g
	}
	rg := &recordedGame{g: g, seen: map[valuation.Coalition]float64{}}
	gr.mu.Lock()
	gr.games[round] = rg
	gr.mu.Unlock()
	return rg
}

func (gr *gameRecorder) take(round int) *recordedGame {
	gr.mu.Lock()
	defer gr.mu.Unlock()
	g := gr.games[round]
	delete(gr.games, round)
	return g
}

// exportGame writes a completed round's game to dir/round-RRR.csv, one
// row per coalition evaluated, sorted by bitmask:
//
//	bitmask,players,clients,utility
//
// bitmask is the coalition (bit i = player i), players its members and
// clients the client ids behind them (RoundValuation.Players: a cluster of
// copies valued as one, or a group), space-separated; utility the
// coalition's utility in the shortest form that parses back to the same
// float64. Vector methods (cgsv, influence) play no game: nothing is
// written.
func exportGame(dir string, rec engine.RoundRecord, g *recordedGame) error {
	if g == nil || rec.Valuation == nil || rec.Failed {
		return nil
	}
	g.mu.Lock()
	cs := make([]valuation.Coalition, 0, len(g.seen))
	for c := range g.seen {
		cs = append(cs, c)
	}
	g.mu.Unlock()
	slices.Sort(cs)
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("round-%03d.csv", rec.Round)))
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, "bitmask,players,clients,utility")
	players := rec.Valuation.Players
	for _, c := range cs {
		var ps, ids []string
		for _, i := range c.Members() {
			ps = append(ps, strconv.Itoa(i))
			if i < len(players) {
				ids = append(ids, players[i]...)
			}
		}
		slices.Sort(ids)
		fmt.Fprintf(w, "%d,%s,%s,%s\n", uint64(c), strings.Join(ps, " "), strings.Join(ids, " "), strconv.FormatFloat(g.seen[c], 'g', -1, 64))
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
