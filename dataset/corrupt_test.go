package dataset

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestParseCorruptionRoundTrip(t *testing.T) {
	tests := []struct {
		in   string
		want Corruption
		text string // canonical String(), "" = same as in
	}{
		{"", Corruption{}, "none"},
		{"none", Corruption{}, ""},
		{"  none ", Corruption{}, "none"},
		{"label-flip:0.5", Corruption{Kind: CorruptLabelFlip, Rate: 0.5}, ""},
		{"label-flip:1", Corruption{Kind: CorruptLabelFlip, Rate: 1}, ""},
		{"label-flip:0.30", Corruption{Kind: CorruptLabelFlip, Rate: 0.3}, "label-flip:0.3"},
		{"label-flip:0.1234567890123", Corruption{Kind: CorruptLabelFlip, Rate: 0.1234567890123}, ""},
		{"feature-noise:0.5", Corruption{Kind: CorruptFeatureNoise, Sigma: 0.5}, ""},
		{"feature-noise:12", Corruption{Kind: CorruptFeatureNoise, Sigma: 12}, ""},
		{"feature-noise:1e-3", Corruption{Kind: CorruptFeatureNoise, Sigma: 0.001}, "feature-noise:0.001"},
		{"duplicate:3", Corruption{Kind: CorruptDuplicate, Of: 3}, ""},
		{"duplicate:0", Corruption{Kind: CorruptDuplicate}, ""},
		{"free-rider:zero", Corruption{Kind: CorruptFreeRider, Mode: FreeRiderZero}, ""},
		{"free-rider:random", Corruption{Kind: CorruptFreeRider, Mode: FreeRiderRandom}, ""},
		{"free-rider:echo", Corruption{Kind: CorruptFreeRider, Mode: FreeRiderEcho}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			c, err := ParseCorruption(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if c != tc.want {
				t.Fatalf("ParseCorruption(%q) = %+v, want %+v", tc.in, c, tc.want)
			}
			text := tc.text
			if text == "" {
				text = tc.in
			}
			if c.String() != text {
				t.Errorf("String() = %q, want %q", c.String(), text)
			}
			back, err := ParseCorruption(c.String())
			if err != nil || back != c {
				t.Errorf("ParseCorruption(String()) = %+v, %v; want %+v", back, err, c)
			}
			if got, want := c.IsFreeRider(), c.Kind == CorruptFreeRider; got != want {
				t.Errorf("IsFreeRider() = %v", got)
			}
		})
	}
}

func TestParseCorruptionErrors(t *testing.T) {
	tests := []struct{ in, msg string }{
		{"flip:0.5", `dataset: invalid corruption "flip:0.5": unknown kind "flip"; want none, label-flip:RATE, feature-noise:SIGMA, duplicate:CLIENT or free-rider:zero|random|echo`},
		{"label-flip", `dataset: invalid corruption "label-flip": label-flip needs a value after the colon`},
		{"label-flip:", `dataset: invalid corruption "label-flip:": label-flip needs a value after the colon`},
		{"label-flip:1.5", `dataset: invalid corruption "label-flip:1.5": rate "1.5" must be a number in [0, 1]`},
		{"label-flip:-0.1", `dataset: invalid corruption "label-flip:-0.1": rate "-0.1" must be a number in [0, 1]`},
		{"label-flip:NaN", `dataset: invalid corruption "label-flip:NaN": rate "NaN" must be a number in [0, 1]`},
		{"label-flip:half", `dataset: invalid corruption "label-flip:half": rate "half" must be a number in [0, 1]`},
		{"feature-noise:-1", `dataset: invalid corruption "feature-noise:-1": sigma "-1" must be a finite number ≥ 0`},
		{"feature-noise:Inf", `dataset: invalid corruption "feature-noise:Inf": sigma "Inf" must be a finite number ≥ 0`},
		{"duplicate:-1", `dataset: invalid corruption "duplicate:-1": client "-1" must be an integer ≥ 0`},
		{"duplicate:1.5", `dataset: invalid corruption "duplicate:1.5": client "1.5" must be an integer ≥ 0`},
		{"free-rider", `dataset: invalid corruption "free-rider": free-rider needs a value after the colon`},
		{"free-rider:lazy", `dataset: invalid corruption "free-rider:lazy": mode "lazy"; want zero, random or echo`},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			_, err := ParseCorruption(tc.in)
			if !errors.Is(err, ErrCorruption) || err.Error() != tc.msg {
				t.Fatalf("got %v\nwant %s", err, tc.msg)
			}
		})
	}
}

func TestCorruptionText(t *testing.T) {
	type cfg struct {
		Clients []Corruption `yaml:"clients" json:"clients"`
	}
	want := cfg{Clients: []Corruption{{}, {Kind: CorruptLabelFlip, Rate: 0.25}, {Kind: CorruptFreeRider, Mode: FreeRiderEcho}}}
	var fromYAML cfg
	if err := yaml.Unmarshal([]byte("clients: [none, \"label-flip:0.25\", \"free-rider:echo\"]\n"), &fromYAML); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromYAML, want) {
		t.Errorf("YAML gave %+v, want %+v", fromYAML, want)
	}
	js, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if string(js) != `{"clients":["none","label-flip:0.25","free-rider:echo"]}` {
		t.Errorf("JSON %s", js)
	}
	var fromJSON cfg
	if err := json.Unmarshal(js, &fromJSON); err != nil || !reflect.DeepEqual(fromJSON, want) {
		t.Errorf("JSON round trip gave %+v, %v", fromJSON, err)
	}
	if _, err := (Corruption{Kind: CorruptLabelFlip, Rate: 0.1, Of: 2}).MarshalText(); !errors.Is(err, ErrCorruption) {
		t.Errorf("a field the kind does not use marshalled without error: %v", err)
	}
	var c Corruption
	if err := yaml.Unmarshal([]byte(`"label-flip:2"`), &c); !errors.Is(err, ErrCorruption) {
		t.Errorf("bad YAML corruption: got %v, want ErrCorruption", err)
	}
}

func TestCorruptDataLabelFlip(t *testing.T) {
	const rows, classes = 10000, 5
	e := indexed(rows, 1, 1, 1, 1, 1)
	orig := copyExamples(e)
	for _, rate := range []float64{0, 0.1, 0.5, 1} {
		rng := rand.New(rand.NewPCG(11, 12))
		got := CorruptData(e, classes, Corruption{Kind: CorruptLabelFlip, Rate: rate}, rng)
		if !reflect.DeepEqual(e, orig) {
			t.Fatal("CorruptData modified its input")
		}
		if !reflect.DeepEqual(got.X, e.X) {
			t.Fatal("label flip changed features")
		}
		flipped := 0
		// to[c] counts flips from class 0 to class c, to check uniformity.
		to := make([]int, classes)
		for i, y := range got.Y {
			if y < 0 || y >= classes {
				t.Fatalf("row %d: label %d out of range", i, y)
			}
			if y != e.Y[i] {
				flipped++
				if e.Y[i] == 0 {
					to[y]++
				}
			}
		}
		// The count is exact by construction: round(rate·rows) distinct rows,
		// each moved to a different class.
		if want := int(math.Round(rate * rows)); flipped != want {
			t.Errorf("rate %g: %d labels changed, want %d", rate, flipped, want)
		}
		if rate == 1 {
			// 2000 flips of class 0 spread over 4 classes: 500 ± 5 sd (~97).
			for c := 1; c < classes; c++ {
				if to[c] < 400 || to[c] > 600 {
					t.Errorf("class 0 flipped to %d %d times, want about 500 (uniform)", c, to[c])
				}
			}
		}
	}
}

func TestCorruptDataSingleClassUnchanged(t *testing.T) {
	e := indexed(20, 1)
	got := CorruptData(e, 1, Corruption{Kind: CorruptLabelFlip, Rate: 1}, rand.New(rand.NewPCG(1, 1)))
	if !reflect.DeepEqual(got, e) {
		t.Error("a single-class flip changed the data")
	}
}

func TestCorruptDataFeatureNoise(t *testing.T) {
	e := indexed(20000, 1, 1)
	const sigma = 0.7
	got := CorruptData(e, 2, Corruption{Kind: CorruptFeatureNoise, Sigma: sigma}, rand.New(rand.NewPCG(3, 4)))
	if !reflect.DeepEqual(got.Y, e.Y) {
		t.Fatal("feature noise changed labels")
	}
	sum, sumSq := 0.0, 0.0
	for i := range got.X {
		d := got.X[i] - e.X[i]
		sum += d
		sumSq += d * d
	}
	n := float64(len(got.X))
	mean, sd := sum/n, math.Sqrt(sumSq/n-(sum/n)*(sum/n))
	if math.Abs(mean) > 5*sigma/math.Sqrt(n) {
		t.Errorf("noise mean %.4f, want 0 ± %.4f", mean, 5*sigma/math.Sqrt(n))
	}
	if math.Abs(sd-sigma) > 0.02*sigma {
		t.Errorf("noise sd %.4f, want %g ± 2%%", sd, sigma)
	}
}

func TestCorruptDataOtherKindsCopy(t *testing.T) {
	e := indexed(10, 1, 1)
	for _, c := range []Corruption{{}, {Kind: CorruptDuplicate, Of: 2}, {Kind: CorruptFreeRider, Mode: FreeRiderZero}} {
		t.Run(c.String(), func(t *testing.T) {
			got := CorruptData(e, 2, c, rand.New(rand.NewPCG(1, 1)))
			if !reflect.DeepEqual(got, e) {
				t.Fatal("data changed")
			}
			got.X[0], got.Y[0] = 99, 1
			if e.X[0] == 99 || e.Y[0] == 1 {
				t.Fatal("the copy aliases the input")
			}
		})
	}
}

func TestCorruptDataDeterministic(t *testing.T) {
	e := indexed(100, 1, 1, 1)
	for _, c := range []Corruption{{Kind: CorruptLabelFlip, Rate: 0.3}, {Kind: CorruptFeatureNoise, Sigma: 1}} {
		a := CorruptData(e, 3, c, rand.New(rand.NewPCG(8, 9)))
		b := CorruptData(e, 3, c, rand.New(rand.NewPCG(8, 9)))
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%v: same rng seed, different result", c)
		}
	}
}

func TestFreeRiderUpdate(t *testing.T) {
	norm := func(v []float64) float64 {
		s := 0.0
		for _, x := range v {
			s += x * x
		}
		return math.Sqrt(s)
	}
	const n = 1000
	rng := rand.New(rand.NewPCG(1, 2))
	last := make([]float64, n)
	for i := range last {
		last[i] = float64(i) / n
	}
	t.Run("zero", func(t *testing.T) {
		u := FreeRiderUpdate(Corruption{Kind: CorruptFreeRider, Mode: FreeRiderZero}, 3, last, n, rng)
		if len(u) != n || norm(u) != 0 {
			t.Errorf("len %d, norm %g; want %d zeros", len(u), norm(u), n)
		}
	})
	t.Run("random", func(t *testing.T) {
		c := Corruption{Kind: CorruptFreeRider, Mode: FreeRiderRandom}
		for _, h := range []float64{0, 0.01, 3, 1e4} {
			u := FreeRiderUpdate(c, h, nil, n, rng)
			if len(u) != n || math.Abs(norm(u)-h) > 1e-9*max(1, h) {
				t.Errorf("honest norm %g: got len %d norm %.12g", h, len(u), norm(u))
			}
		}
		a := FreeRiderUpdate(c, 1, nil, n, rng)
		b := FreeRiderUpdate(c, 1, nil, n, rng)
		dot := 0.0
		for i := range a {
			dot += a[i] * b[i]
		}
		// Two random unit directions in 1000 dimensions are nearly orthogonal.
		if math.Abs(dot) > 0.2 {
			t.Errorf("two random updates have cosine %.3f, want near 0", dot)
		}
	})
	t.Run("echo", func(t *testing.T) {
		c := Corruption{Kind: CorruptFreeRider, Mode: FreeRiderEcho}
		u := FreeRiderUpdate(c, 5, last, n, rng)
		if !reflect.DeepEqual(u, last) {
			t.Fatal("echo is not a copy of the last global delta")
		}
		u[0] = 42
		if last[0] == 42 {
			t.Fatal("echo aliases the last global delta")
		}
		if r0 := FreeRiderUpdate(c, 5, nil, n, rng); len(r0) != n || norm(r0) != 0 {
			t.Errorf("round 0 echo: len %d norm %g, want zeros", len(r0), norm(r0))
		}
		defer func() {
			if recover() == nil {
				t.Error("a delta of the wrong length did not panic")
			}
		}()
		FreeRiderUpdate(c, 5, last[:10], n, rng)
	})
	t.Run("not-a-free-rider", func(t *testing.T) {
		if u := FreeRiderUpdate(Corruption{Kind: CorruptLabelFlip, Rate: 0.5}, 1, last, n, rng); u != nil {
			t.Errorf("got %d values, want nil", len(u))
		}
	})
}
