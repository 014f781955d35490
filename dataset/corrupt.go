package dataset

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/tallyfl/tally/model"
)

// Corruption kinds. The zero Corruption (Kind "") is no corruption.
const (
	CorruptNone         = ""
	CorruptLabelFlip    = "label-flip"
	CorruptFeatureNoise = "feature-noise"
	CorruptDuplicate    = "duplicate"
	CorruptFreeRider    = "free-rider"
)

// Free-rider modes.
const (
	FreeRiderZero   = "zero"
	FreeRiderRandom = "random"
	FreeRiderEcho   = "echo"
)

// Corruption describes how one simulated client misbehaves in an
// experiment, so that a valuation method can be checked for giving it a low
// score. Only the field of its Kind is meaningful:
//
//   - label-flip (Rate): a fraction Rate of the client's rows get a wrong
//     label (Tolpegin et al. 2020, "Data poisoning attacks against federated
//     learning systems").
//   - feature-noise (Sigma): N(0, Sigma²) noise on every feature.
//   - duplicate (Of): the client holds an exact copy of client Of's data;
//     a fair valuation should not pay twice for the same data (Ohrimenko,
//     Tople & Tschiatschek 2019, "Collaborative machine learning markets
//     with data-replication-robust payments"). The caller applies it by
//     giving the client partition Of.
//   - free-rider (Mode): the client trains on nothing and sends zeros, a
//     random update or an echo of the last global change (Lin, Du & Liu
//     2019, "Free-riders in federated learning: attacks and defenses";
//     Fraboni et al. 2021, "Free-rider attacks on model aggregation in
//     federated learning"). See FreeRiderUpdate.
//
// Its text form, "label-flip:0.3", "feature-noise:0.5", "duplicate:2",
// "free-rider:echo" or "none", is what ParseCorruption reads and String
// writes; it is also the YAML and JSON form.
type Corruption struct {
	Kind  string
	Rate  float64
	Sigma float64
	Of    int
	Mode  string
}

// ParseCorruption reads the text form described on Corruption. "" and
// "none" give the zero Corruption. Errors wrap ErrCorruption.
func ParseCorruption(s string) (Corruption, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "none" {
		return Corruption{}, nil
	}
	kind, arg, hasArg := strings.Cut(s, ":")
	fail := func(format string, a ...any) (Corruption, error) {
		return Corruption{}, fmt.Errorf("%w %q: "+format, append([]any{ErrCorruption, s}, a...)...)
	}
	switch kind {
	case CorruptLabelFlip, CorruptFeatureNoise, CorruptDuplicate, CorruptFreeRider:
	default:
		return fail("unknown kind %q; want none, label-flip:RATE, feature-noise:SIGMA, duplicate:CLIENT or free-rider:zero|random|echo", kind)
	}
	if !hasArg || arg == "" {
		return fail("%s needs a value after the colon", kind)
	}
	c := Corruption{Kind: kind}
	switch kind {
	case CorruptLabelFlip:
		v, err := strconv.ParseFloat(arg, 64)
		if err != nil || !(v >= 0 && v <= 1) {
			return fail("rate %q must be a number in [0, 1]", arg)
		}
		c.Rate = v
	case CorruptFeatureNoise:
		v, err := strconv.ParseFloat(arg, 64)
		if err != nil || !(v >= 0) || math.IsInf(v, 0) {
			return fail("sigma %q must be a finite number ≥ 0", arg)
		}
		c.Sigma = v
	case CorruptDuplicate:
		v, err := strconv.Atoi(arg)
		if err != nil || v < 0 {
			return fail("client %q must be an integer ≥ 0", arg)
		}
		c.Of = v
	case CorruptFreeRider:
		switch arg {
		case FreeRiderZero, FreeRiderRandom, FreeRiderEcho:
		default:
			return fail("mode %q; want zero, random or echo", arg)
		}
		c.Mode = arg
	}
	return c, nil
}

// String returns the text form; ParseCorruption(c.String()) == c for every
// value ParseCorruption returns. Numbers use the shortest exact form.
func (c Corruption) String() string {
	switch c.Kind {
	case CorruptNone:
		return "none"
	case CorruptLabelFlip:
		return c.Kind + ":" + strconv.FormatFloat(c.Rate, 'g', -1, 64)
	case CorruptFeatureNoise:
		return c.Kind + ":" + strconv.FormatFloat(c.Sigma, 'g', -1, 64)
	case CorruptDuplicate:
		return c.Kind + ":" + strconv.Itoa(c.Of)
	case CorruptFreeRider:
		return c.Kind + ":" + c.Mode
	}
	return c.Kind
}

// MarshalText writes the text form, after checking that it parses back.
func (c Corruption) MarshalText() ([]byte, error) {
	s := c.String()
	back, err := ParseCorruption(s)
	if err != nil {
		return nil, err
	}
	if back != c {
		return nil, fmt.Errorf("%w: %+v has fields its kind does not use", ErrCorruption, c)
	}
	return []byte(s), nil
}

// UnmarshalText reads the text form with ParseCorruption.
func (c *Corruption) UnmarshalText(b []byte) error {
	v, err := ParseCorruption(string(b))
	if err != nil {
		return err
	}
	*c = v
	return nil
}

// IsFreeRider reports whether the client sends a fabricated update instead
// of training; see FreeRiderUpdate.
func (c Corruption) IsFreeRider() bool { return c.Kind == CorruptFreeRider }

// CorruptData returns a corrupted copy of a client's data; e itself is not
// modified. Labels must lie in [0, classes).
//
//   - label-flip: exactly round(Rate·Len) distinct rows, chosen uniformly,
//     get a label drawn uniformly from the classes other than their own.
//     With fewer than two classes there is nothing to flip to and the copy
//     is unchanged.
//   - feature-noise: every feature of every row gets independent
//     N(0, Sigma²) noise. Features are raw here, so Sigma is in the units
//     of the data unless the caller scales first.
//   - every other kind: an unchanged copy.
func CorruptData(e model.Examples, classes int, c Corruption, rng *rand.Rand) model.Examples {
	out := copyExamples(e)
	switch c.Kind {
	case CorruptLabelFlip:
		if classes < 2 {
			return out
		}
		k := int(math.Round(c.Rate * float64(out.Len())))
		k = min(max(k, 0), out.Len())
		// A partial Fisher–Yates shuffle picks k distinct rows.
		perm := make([]int, out.Len())
		for i := range perm {
			perm[i] = i
		}
		for i := range k {
			j := i + rng.IntN(len(perm)-i)
			perm[i], perm[j] = perm[j], perm[i]
			row := perm[i]
			nl := rng.IntN(classes - 1)
			if nl >= out.Y[row] {
				nl++
			}
			out.Y[row] = nl
		}
	case CorruptFeatureNoise:
		for i := range out.X {
			out.X[i] += c.Sigma * rng.NormFloat64()
		}
	}
	return out
}

// FreeRiderUpdate fabricates the n-parameter model update a free rider
// sends instead of training:
//
//   - zero: all zeros (the plain free rider);
//   - random: a Gaussian direction scaled to Euclidean norm honestNorm, so
//     that norm-based checks cannot tell it from an honest update;
//   - echo: a copy of lastGlobalDelta, the change of the global model in
//     the previous round, which imitates the honest consensus (Fraboni et
//     al. 2021's disguised free rider); pass nil in round 0 to get zeros.
//
// For a Corruption that is not a free rider it returns nil. A non-empty
// lastGlobalDelta whose length is not n is a caller bug and panics.
func FreeRiderUpdate(c Corruption, honestNorm float64, lastGlobalDelta []float64, n int, rng *rand.Rand) []float64 {
	if !c.IsFreeRider() {
		return nil
	}
	out := make([]float64, n)
	switch c.Mode {
	case FreeRiderRandom:
		norm := 0.0
		for i := range out {
			out[i] = rng.NormFloat64()
			norm += out[i] * out[i]
		}
		if norm = math.Sqrt(norm); norm > 0 {
			for i := range out {
				out[i] *= honestNorm / norm
			}
		}
	case FreeRiderEcho:
		if len(lastGlobalDelta) != 0 && len(lastGlobalDelta) != n {
			panic(fmt.Sprintf("dataset: FreeRiderUpdate: lastGlobalDelta has %d values, want %d", len(lastGlobalDelta), n))
		}
		copy(out, lastGlobalDelta)
	}
	return out
}
