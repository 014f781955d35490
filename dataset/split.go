package dataset

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/tallyfl/tally/model"
)

// PCG stream constants keep the random draws of different purposes apart:
// the same seed given to Split and to Partition yields unrelated shuffles.
const (
	streamSplit     = 0x73706c6974       // "split"
	streamPartition = 0x706172746974696f // "partitio"
)

// Split divides e into train, validation and test sets, stratified by class:
// within every class, a fraction valFrac of the rows goes to validation and
// testFrac to test, so each set keeps the class proportions of e.
//
// Sizes: the test set has round(testFrac·N) rows and the validation set
// round(valFrac·N) rows (±1), where N = e.Len(); the per-class counts are
// apportioned by largest remainder, so each class contributes the floor or
// the ceiling of its exact share. Rows keep their original order within each
// set, and the same seed always yields the same split.
//
// Errors (wrapping ErrSplit or ErrInvalid): fractions outside [0, 1) or
// summing to 1 or more, malformed examples, or an empty training set.
func Split(e model.Examples, valFrac, testFrac float64, seed uint64) (train, val, test model.Examples, err error) {
	if !(valFrac >= 0 && testFrac >= 0 && valFrac+testFrac < 1) {
		return train, val, test, fmt.Errorf("%w: val %g and test %g must be ≥ 0 and sum to less than 1", ErrSplit, valFrac, testFrac)
	}
	if err := checkExamples(e, 0); err != nil {
		return train, val, test, err
	}
	n := e.Len()
	byClass := rowsByClass(e.Y)
	counts := make([]float64, len(byClass))
	for c, rows := range byClass {
		counts[c] = float64(len(rows))
	}
	nTest := int(math.Round(testFrac * float64(n)))
	testQ := apportion(nTest, counts)
	rest := make([]float64, len(counts))
	for c := range counts {
		rest[c] = counts[c] - float64(testQ[c])
	}
	nVal := int(math.Round(valFrac * float64(n)))
	if nVal > n-nTest {
		nVal = n - nTest
	}
	valQ := apportion(nVal, rest)
	if n-nTest-nVal <= 0 {
		return train, val, test, fmt.Errorf("%w: %d rows leave no training rows after %d for validation and %d for test", ErrSplit, n, nVal, nTest)
	}

	rng := rand.New(rand.NewPCG(seed, streamSplit))
	var trainIdx, valIdx, testIdx []int
	for c, rows := range byClass {
		rows = slices.Clone(rows)
		rng.Shuffle(len(rows), func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })
		testIdx = append(testIdx, rows[:testQ[c]]...)
		valIdx = append(valIdx, rows[testQ[c]:testQ[c]+valQ[c]]...)
		trainIdx = append(trainIdx, rows[testQ[c]+valQ[c]:]...)
	}
	slices.Sort(trainIdx)
	slices.Sort(valIdx)
	slices.Sort(testIdx)
	return e.Subset(trainIdx), e.Subset(valIdx), e.Subset(testIdx), nil
}

// rowsByClass lists the row indices of every label 0..max(y), in order.
func rowsByClass(y []int) [][]int {
	k := 0
	for _, v := range y {
		k = max(k, v+1)
	}
	out := make([][]int, k)
	for i, v := range y {
		out[v] = append(out[v], i)
	}
	return out
}

// apportion divides total into parts proportional to weights by the largest
// remainder (Hamilton) method: every part is the floor or the ceiling of its
// exact share total·w_i/Σw, and the parts sum to total. Ties go to the lower
// index, which keeps the result deterministic. All weights zero yields zeros.
func apportion(total int, weights []float64) []int {
	out := make([]int, len(weights))
	sum := 0.0
	for _, w := range weights {
		sum += w
	}
	if sum <= 0 || total <= 0 {
		return out
	}
	type rem struct {
		i int
		r float64
	}
	rems := make([]rem, len(weights))
	given := 0
	for i, w := range weights {
		exact := float64(total) * w / sum
		out[i] = int(math.Floor(exact))
		given += out[i]
		rems[i] = rem{i, exact - float64(out[i])}
	}
	slices.SortStableFunc(rems, func(a, b rem) int {
		switch {
		case a.r > b.r:
			return -1
		case a.r < b.r:
			return 1
		}
		return 0
	})
	for k := 0; given < total; k = (k + 1) % len(rems) {
		out[rems[k].i]++
		given++
	}
	return out
}
