package aggregation

import (
	"errors"
	"math"
	"os"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestDefaultParameters(t *testing.T) {
	p := DefaultParameters()
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"slots", float64(p.Slots()), 16384},
		{"logQP", p.LogQP(), 241},
		{"log2 sigma", math.Round(math.Log2(p.NoiseFloodingSigma())), 72},
		{"log2 influence sigma", math.Round(math.Log2(p.InfluenceFloodingTarget())), 90},
		{"levels", float64(p.CKKS().MaxLevel() + 1), 3},
		{"P primes", float64(len(p.CKKS().P())), 1},
		// c₁ over three primes, c₀ rounded over two (encrypt.go).
		{"ciphertext bytes", float64(p.CiphertextSize()), 655360 + ciphertextHeaderSize},
		{"blocks for 1M", float64(p.Blocks(1_000_000)), 62},
		{"blocks for 16383", float64(p.Blocks(16383)), 1},
		{"blocks for 16384", float64(p.Blocks(16384)), 2},
	} {
		if c.name == "logQP" {
			if c.got < 240 || c.got > 241.5 {
				t.Errorf("%s = %v, want ≈ %v", c.name, c.got, c.want)
			}
			continue
		}
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if p.Insecure() {
		t.Error("default set rated insecure")
	}
	if max, _ := MaxLogQP(14); p.LogQP() > float64(max) {
		t.Errorf("log QP %v above the 128-bit bound %d", p.LogQP(), max)
	}
	if !testParams(t).Insecure() {
		t.Error("the LogN 10 test set is not flagged insecure")
	}
}

func loadConfig(t *testing.T, path string) ParametersConfig {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg ParametersConfig
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestParametersConfigFiles(t *testing.T) {
	t.Run("default.yaml", func(t *testing.T) {
		p, err := NewParameters(loadConfig(t, "testdata/default.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if p.ID() != DefaultParameters().ID() {
			t.Fatal("default.yaml does not give the default parameters")
		}
	})
	for _, tc := range []struct {
		file string
		want []string
	}{
		{"logn-small.bad.yaml", []string{
			"aggregation: invalid configuration: log(QP) = 241 bits exceeds the 128-bit bound 54 for log_n 11 (set insecure: true for tests only)",
		}},
		{"many.bad.yaml", []string{
			"aggregation: invalid configuration: log_n 9 outside [10, 15]",
			"aggregation: invalid configuration: log_q[1] = 70 outside [30, 61]",
			"aggregation: invalid configuration: log_p[0] = 20 outside [30, 61]",
			"aggregation: invalid configuration: log_default_scale 125 outside [20, Σlog_q−20 = 110]",
			"aggregation: invalid configuration: encoder_precision 64 outside [24, 53]",
			"aggregation: invalid configuration: log_noise_flooding 5 outside [10, log_default_scale−20 = 105] (or 0: derived from flooding)",
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			_, err := NewParameters(loadConfig(t, "testdata/"+tc.file))
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("err = %v, want ErrInvalidConfig", err)
			}
			if got := strings.Split(err.Error(), "\n"); strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("errors:\n%s\nwant:\n%s", err, strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestParametersIDDistinguishes(t *testing.T) {
	a := DefaultParameters()
	cfg := DefaultConfig()
	cfg.LogNoiseFlooding = 31
	b, err := NewParameters(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if a.ID() == b.ID() {
		t.Fatal("parameters differing in noise flooding share an ID")
	}
	if a.ID() != DefaultParameters().ID() {
		t.Fatal("parameter ID is not deterministic")
	}
}

func TestFedAvg(t *testing.T) {
	got, err := FedAvg([][]float64{{1, 2}, {3, 4}}, []float64{1, 3})
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != 2.5 || got[1] != 3.5 {
		t.Fatalf("FedAvg = %v, want [2.5 3.5]", got)
	}
	for _, tc := range []struct {
		name    string
		updates [][]float64
		weights []float64
		want    string
	}{
		{"no-updates", nil, nil, "no updates"},
		{"weights-count", [][]float64{{1}}, []float64{1, 2}, "1 updates but 2 weights"},
		{"length", [][]float64{{1, 2}, {1}}, []float64{1, 1}, "client 1: update has 1 values, client 0 has 2"},
		{"zero-weight", [][]float64{{1}, {1}}, []float64{1, 0}, "client 1: weight 0 must be finite and > 0"},
		{"negative-weight", [][]float64{{1}}, []float64{-2}, "client 0: weight -2"},
		{"nan", [][]float64{{1}, {nan()}}, []float64{1, 1}, "client 1: value 0 is NaN"},
		{"empty", [][]float64{{}}, []float64{1}, "client 0: empty update"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := FedAvg(tc.updates, tc.weights)
			if !errors.Is(err, ErrInvalidInput) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalidInput containing %q", err, tc.want)
			}
		})
	}
}

func nan() float64 { var z float64; return z / z }

func TestPolicyConfig(t *testing.T) {
	p, err := NewPolicy(PolicyConfig{})
	if err != nil || p.MinContributors() != 3 {
		t.Fatalf("default policy: %v, k = %d", err, p.MinContributors())
	}
	if _, err := NewPolicy(PolicyConfig{MinContributors: 1}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("k = 1 accepted: %v", err)
	}
}
