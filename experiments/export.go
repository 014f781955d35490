package experiments

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// exportGame writes one round's game in one mode as CSV, one row per
// coalition some method evaluated, sorted by bitmask:
//
//	bitmask,players,clients,utility
//
// bitmask is the coalition as an integer (bit i = player i), players its
// members and clients the clients behind them, space-separated (the same in
// plain and influence modes; in groups mode a player is a group), utility
// the coalition's utility in the shortest form that parses back to the same
// float64. The file name is round-RR-MODE.csv.
func exportGame(dir string, r int, rg *roundGame) error {
	if rg.rec == nil {
		return nil
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("round-%02d-%s.csv", r, rg.mode)))
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, "bitmask,players,clients,utility")
	cs, us := rg.rec.coalitions()
	for k, c := range cs {
		players := c.Members()
		var clients []int
		if rg.groups == nil {
			clients = players
		} else {
			for _, g := range players {
				clients = append(clients, rg.groups[g]...)
			}
			slices.Sort(clients)
		}
		fmt.Fprintf(w, "%d,%s,%s,%s\n", uint64(c), joinInts(players), joinInts(clients), fmtFloat(us[k]))
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, " ")
}
