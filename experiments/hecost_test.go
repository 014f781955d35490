package experiments

import (
	"bytes"
	"encoding/csv"
	"testing"
)

// TestHERound checks the per-round counting rule against numbers worked out
// by hand from the coordinator's protocol.
func TestHERound(t *testing.T) {
	for _, c := range []struct {
		name   string
		mode   string
		n, b   int
		groups []int
		k      int
		want   Cost
	}{
		// Nothing is encrypted.
		{name: "plain", mode: ModePlain, n: 5, b: 1, want: Cost{}},
		// Committee c = 5, t = 3. Adds 5·1; two aggregates of 1 block,
		// 3 shares and 1 combination each.
		{name: "groups n=5 k=2", mode: ModeGroups, n: 5, b: 1, groups: []int{3, 2}, k: 2,
			want: Cost{HEAdds: 5, DecShares: 6, DecCombines: 2}},
		// A group of 1 below k = 2 is folded into the other: 3 blocks of
		// merging, then one aggregate of 3 blocks, t = 3 shares per block.
		{name: "groups merge", mode: ModeGroups, n: 5, b: 3, groups: []int{4, 1}, k: 2,
			want: Cost{HEAdds: 5*3 + 3, DecShares: 3 * 3, DecCombines: 3}},
		// Sizes 1, 1, 2 with k = 3: 1+1 → 2, then 2+2 → 4: two merges of
		// 2 blocks; n = 4 gives c = 4, t = 3.
		{name: "groups two merges", mode: ModeGroups, n: 4, b: 2, groups: []int{1, 1, 2}, k: 3,
			want: Cost{HEAdds: 4*2 + 2*2, DecShares: 1 * 3 * 2, DecCombines: 2}},
		// n = 5, B = 1: 5 additions into the accumulator, 5 products
		// added into per-client ciphertexts; the aggregate's 3 shares and
		// 1 combination, then 5 coefficients of 5 shares, 1 combination
		// each.
		{name: "influence n=5", mode: ModeInfluence, n: 5, b: 1,
			want: Cost{HEAdds: 10, HEMults: 5, DecShares: 3 + 25, DecCombines: 1 + 5}},
		// n = 10, B = 2: committee still 5 of 10, t = 3.
		{name: "influence n=10 B=2", mode: ModeInfluence, n: 10, b: 2,
			want: Cost{HEAdds: 40, HEMults: 20, DecShares: 3*2 + 10*5, DecCombines: 2 + 10}},
		// n = 2: c = 2, t = 2.
		{name: "influence n=2", mode: ModeInfluence, n: 2, b: 1,
			want: Cost{HEAdds: 4, HEMults: 2, DecShares: 2 + 2*2, DecCombines: 1 + 2}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := heRound(c.mode, c.n, c.b, c.groups, c.k); got != c.want {
				t.Fatalf("heRound = %+v, want %+v", got, c.want)
			}
		})
	}
}

// TestCiphertextBlocks checks B = ⌈(P+1)/16384⌉ at the default LogN 14 (a
// conjugate-invariant ring: 16,384 real slots, one taken by the weight).
func TestCiphertextBlocks(t *testing.T) {
	for _, c := range []struct{ params, want int }{{1, 1}, {31, 1}, {16383, 1}, {16384, 2}, {3 * 16384, 4}} {
		if got := ciphertextBlocks(c.params); got != c.want {
			t.Errorf("ciphertextBlocks(%d) = %d, want %d", c.params, got, c.want)
		}
	}
}

// TestHECostsInRuns runs a 5-client, 2-round scenario and checks the
// homomorphic counts of every mode in runs.csv against numbers computed by
// hand: logistic regression on breast-cancer fits one ciphertext (B = 1),
// the committee is 5 with t = 3, groups mode draws groups of 3 and 2
// (k = 2, no merge).
func TestHECostsInRuns(t *testing.T) {
	sc := load(t, "label-noise-bc5", 2, 1)
	runs := run(t, sc, Options{Methods: mustMethods(t, "loo")})
	var ms []Metrics
	for _, r := range runs {
		ms = append(ms, Evaluate(r)...)
	}
	var b bytes.Buffer
	if err := WriteMetrics(&b, ms); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	col := map[string]int{}
	for k, h := range rows[0] {
		col[h] = k
	}
	// Per run of 2 rounds.
	want := map[string][4]string{
		ModePlain:     {"0", "0", "0", "0"},
		ModeGroups:    {"10", "0", "12", "4"},   // 2·5 adds; 2 rounds × 2 groups × 3 shares, × 1 combination
		ModeInfluence: {"20", "10", "56", "12"}, // 2·(5+5) adds, 2·5 mults; 2·(3 + 5·5) shares, 2·(1+5) combinations
		// m = 6 vectors: 2·(5 + 6·5) adds, 2·6·5 mults; 2·(3 + 6·5·5) shares, 2·(1 + 6·5) combinations
		ModeProjection: {"70", "60", "306", "62"},
	}
	seen := map[string]bool{}
	for _, row := range rows[1:] {
		mode := row[col["mode"]]
		got := [4]string{row[col["he_adds"]], row[col["he_mults"]], row[col["dec_shares"]], row[col["dec_combines"]]}
		if got != want[mode] {
			t.Errorf("%s %s: he_adds, he_mults, dec_shares, dec_combines = %v, want %v", mode, row[col["method"]], got, want[mode])
		}
		seen[mode] = true
	}
	if len(seen) != len(want) {
		t.Fatalf("modes in runs.csv: %v", seen)
	}
}
