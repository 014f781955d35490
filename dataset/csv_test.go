package dataset

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/tallyfl/tally/model"
)

func TestLoadCSVErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		opt  CSVOptions
		want string
	}{
		{"not-a-number", "bad_number.csv", CSVOptions{},
			`dataset: testdata/bad_number.csv:3: column "radius" (3): expected a number, got "abc"`},
		{"field-count", "field_count.csv", CSVOptions{},
			`dataset: testdata/field_count.csv:3: expected 5 fields, got 4`},
		{"short-last-row", "short_last.csv", CSVOptions{},
			`dataset: testdata/short_last.csv:3: expected 3 fields, got 2`},
		{"empty-file", "empty.csv", CSVOptions{},
			`dataset: testdata/empty.csv: empty file`},
		{"header-only", "header_only.csv", CSVOptions{},
			`dataset: testdata/header_only.csv: no data rows`},
		{"nan", "nan.csv", CSVOptions{},
			`dataset: testdata/nan.csv:3: column "b" (1): expected a finite number, got "NaN"`},
		{"overflow-to-inf", "inf.csv", CSVOptions{},
			`dataset: testdata/inf.csv:3: column "a" (0): expected a finite number, got "1e999"`},
		{"unknown-label-name", "ok_header.csv", CSVOptions{Label: "target"},
			`dataset: testdata/ok_header.csv: label column "target" not found; the columns are "a", "b", "label"`},
		{"label-index-out-of-range", "ok_header.csv", CSVOptions{Label: "5"},
			`dataset: testdata/ok_header.csv: label column index 5 is out of range: the file has 3 columns`},
		{"negative-label-index-out-of-range", "ok_header.csv", CSVOptions{Label: "-4"},
			`dataset: testdata/ok_header.csv: label column index -4 is out of range: the file has 3 columns`},
		{"unknown-drop-name", "ok_header.csv", CSVOptions{Drop: []string{"id"}},
			`dataset: testdata/ok_header.csv: dropped column "id" not found; the columns are "a", "b", "label"`},
		{"drop-the-label", "ok_header.csv", CSVOptions{Drop: []string{"label"}},
			`dataset: testdata/ok_header.csv: dropped column "label" is the label column`},
		{"name-without-header", "ok_header.csv", CSVOptions{Header: HeaderNo, Label: "label"},
			`dataset: testdata/ok_header.csv: columns are selected by name but the header mode is "no"`},
		{"ambiguous-name", "dup_names.csv", CSVOptions{Label: "a"},
			`dataset: testdata/dup_names.csv: label column "a" is ambiguous: columns 0 and 1 have that name`},
		{"fractional-label", "frac_label.csv", CSVOptions{},
			`dataset: testdata/frac_label.csv:3: column "label" (2): expected an integer label or a class name, got "0.5"`},
		{"name-among-integers", "mixed_label.csv", CSVOptions{},
			`dataset: testdata/mixed_label.csv:4: column "label" (2): expected an integer label like the rows above, got "cat"`},
		{"integer-among-names", "mixed_label_names.csv", CSVOptions{},
			`dataset: testdata/mixed_label_names.csv:3: column "label" (2): expected a class name like the rows above, got the number "7"`},
		{"negative-label", "negative_label.csv", CSVOptions{},
			`dataset: testdata/negative_label.csv:3: column "label" (2): expected a label ≥ 0, got "-1"`},
		{"huge-label", "huge_label.csv", CSVOptions{},
			`dataset: testdata/huge_label.csv:3: column "label" (2): expected a label below 10000, got "100000"`},
		{"empty-label", "empty_label.csv", CSVOptions{},
			`dataset: testdata/empty_label.csv:3: column "label" (2): expected a label, got an empty field`},
		{"label-not-in-classes", "ok_header.csv", CSVOptions{Classes: []string{"a"}},
			`dataset: testdata/ok_header.csv:3: column "label" (2): expected a class name ("a") or an integer in [0, 1), got "1"`},
		{"string-label-not-in-classes", "strings.csv", CSVOptions{Classes: []string{"cat", "dog"}},
			`dataset: testdata/strings.csv:4: column "species" (2): expected a class name ("cat", "dog") or an integer in [0, 2), got "bird"`},
		{"duplicate-class-names", "ok_header.csv", CSVOptions{Classes: []string{"x", "y", "x"}},
			`dataset: testdata/ok_header.csv: class name "x" is given twice (classes 0 and 2)`},
		{"bare-quote", "quote.csv", CSVOptions{},
			`dataset: testdata/quote.csv:3: bare " in non-quoted-field`},
		{"no-header-column-by-index", "noheader_bad.csv", CSVOptions{Header: HeaderNo},
			`dataset: testdata/noheader_bad.csv:2: column 1: expected a number, got "x"`},
		{"label-only", "single.csv", CSVOptions{},
			`dataset: testdata/single.csv:1: expected at least one feature column besides the label, got 1 columns`},
		{"lines-count-quoted-newlines", "multiline_header.csv", CSVOptions{},
			`dataset: testdata/multiline_header.csv:4: column "label" (2): expected an integer label like the rows above, got "x1"`},
		{"unknown-header-mode", "ok_header.csv", CSVOptions{Header: HeaderMode(7)},
			`dataset: testdata/ok_header.csv: unknown header mode 7`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := LoadCSV(filepath.Join("testdata", tc.file), tc.opt)
			if err == nil {
				t.Fatalf("LoadCSV succeeded with %d rows, want error %q", d.Examples.Len(), tc.want)
			}
			if err.Error() != tc.want {
				t.Errorf("error\n got %s\nwant %s", err, tc.want)
			}
			if !errors.Is(err, ErrCSV) {
				t.Errorf("error %v does not wrap ErrCSV", err)
			}
			var ce *CSVError
			if !errors.As(err, &ce) {
				t.Errorf("error %v is not a *CSVError", err)
			}
		})
	}
}

func TestLoadCSVMissingFile(t *testing.T) {
	_, err := LoadCSV(filepath.Join("testdata", "no-such-file.csv"), CSVOptions{})
	if !errors.Is(err, ErrCSV) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("got %v, want an error wrapping ErrCSV and fs.ErrNotExist", err)
	}
}

func TestLoadCSV(t *testing.T) {
	tests := []struct {
		name     string
		file     string
		opt      CSVOptions
		features []string
		classes  []string
		x        []float64
		y        []int
	}{
		{"header-int-labels", "ok_header.csv", CSVOptions{},
			[]string{"a", "b"}, []string{"0", "1"}, []float64{1, 2, 3, 4, 5, 6}, []int{0, 1, 1}},
		{"label-first-by-index", "ok_header.csv", CSVOptions{Label: "0", Header: HeaderYes},
			[]string{"b", "label"}, []string{"0", "1", "2", "3", "4", "5"}, []float64{2, 0, 4, 1, 6, 1}, []int{1, 3, 5}},
		{"label-by-negative-index", "ok_header.csv", CSVOptions{Label: "-3"},
			[]string{"b", "label"}, []string{"0", "1", "2", "3", "4", "5"}, []float64{2, 0, 4, 1, 6, 1}, []int{1, 3, 5}},
		{"label-by-name", "ok_header.csv", CSVOptions{Label: "b"},
			[]string{"a", "label"}, []string{"0", "1", "2", "3", "4", "5", "6"}, []float64{1, 0, 3, 1, 5, 1}, []int{2, 4, 6}},
		{"string-labels-sorted", "strings.csv", CSVOptions{},
			[]string{"x1", "x2"}, []string{"bird", "cat", "dog"}, []float64{1, 2, 3, 4, 5, 6, 7, 8}, []int{2, 1, 0, 1}},
		{"string-labels-fixed-classes", "strings.csv", CSVOptions{Classes: []string{"dog", "cat", "bird"}},
			[]string{"x1", "x2"}, []string{"dog", "cat", "bird"}, []float64{1, 2, 3, 4, 5, 6, 7, 8}, []int{0, 1, 2, 1}},
		{"int-labels-with-class-names", "ok_header.csv", CSVOptions{Classes: []string{"no", "yes"}},
			[]string{"a", "b"}, []string{"no", "yes"}, []float64{1, 2, 3, 4, 5, 6}, []int{0, 1, 1}},
		{"auto-no-header-with-string-labels", "strings_noheader.csv", CSVOptions{},
			[]string{"f0", "f1"}, []string{"cat", "dog"}, []float64{1.5, 2, 3, 4}, []int{1, 0}},
		{"bom-spaces-quotes-drop-by-name", "bom_drop.csv", CSVOptions{Label: "target", Drop: []string{"id"}},
			[]string{"a", "b"}, []string{"no", "yes"}, []float64{1.5, 2, 3, 4, 5, 6}, []int{1, 0, 1}},
		{"drop-by-index", "bom_drop.csv", CSVOptions{Drop: []string{"0"}},
			[]string{"a", "b"}, []string{"no", "yes"}, []float64{1.5, 2, 3, 4, 5, 6}, []int{1, 0, 1}},
		{"integral-float-labels", "float_labels.csv", CSVOptions{},
			[]string{"a", "b"}, []string{"0", "1", "2"}, []float64{1, 2, 3, 4, 5, 6}, []int{1, 0, 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := LoadCSV(filepath.Join("testdata", tc.file), tc.opt)
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Validate(); err != nil {
				t.Fatalf("loaded dataset is invalid: %v", err)
			}
			want := model.Examples{X: tc.x, Y: tc.y, Features: len(tc.features)}
			if !reflect.DeepEqual(d.Examples, want) {
				t.Errorf("examples = %+v, want %+v", d.Examples, want)
			}
			if !reflect.DeepEqual(d.FeatureNames, tc.features) {
				t.Errorf("feature names = %q, want %q", d.FeatureNames, tc.features)
			}
			if !reflect.DeepEqual(d.ClassNames, tc.classes) {
				t.Errorf("class names = %q, want %q", d.ClassNames, tc.classes)
			}
			if wantName := strings.TrimSuffix(tc.file, ".csv"); d.Name != wantName {
				t.Errorf("name = %q, want %q", d.Name, wantName)
			}
		})
	}
}

func TestCSVRoundTrip(t *testing.T) {
	for _, name := range EmbeddedNames() {
		t.Run(name, func(t *testing.T) {
			d, err := Embedded(name)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := WriteCSV(&buf, d); err != nil {
				t.Fatal(err)
			}
			header, _, _ := strings.Cut(buf.String(), "\n")
			if wantHeader := strings.Join(d.FeatureNames, ",") + ",label"; header != wantHeader {
				t.Errorf("header %q, want %q", header, wantHeader)
			}
			back, err := ReadCSV(&buf, name+".csv", CSVOptions{Classes: d.ClassNames})
			if err != nil {
				t.Fatal(err)
			}
			// Bit-exact: DeepEqual compares float64 values with ==, and no
			// value here is NaN.
			if !reflect.DeepEqual(back.Examples, d.Examples) {
				t.Error("examples differ after WriteCSV → ReadCSV")
			}
			if !reflect.DeepEqual(back.FeatureNames, d.FeatureNames) || !reflect.DeepEqual(back.ClassNames, d.ClassNames) {
				t.Errorf("names differ: %q %q", back.FeatureNames, back.ClassNames)
			}
		})
	}
}

func TestCSVRoundTripAwkwardValues(t *testing.T) {
	d := &Dataset{
		Name:         "awkward",
		FeatureNames: []string{"with,comma", `with"quote`, " spaced "},
		ClassNames:   []string{"a", "b", "c"},
		Examples: model.Examples{
			X:        []float64{0.1, -1e-300, 1.7976931348623157e308, 5e-324, 1.0 / 3, -0.0},
			Y:        []int{2, 0},
			Features: 3,
		},
	}
	var buf bytes.Buffer
	if err := WriteCSV(&buf, d); err != nil {
		t.Fatal(err)
	}
	back, err := ReadCSV(&buf, "awkward.csv", CSVOptions{Header: HeaderYes, Classes: d.ClassNames})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Examples, d.Examples) {
		t.Errorf("examples = %v, want %v", back.Examples, d.Examples)
	}
	// Leading spaces are trimmed on read, so " spaced " comes back as "spaced".
	if want := []string{"with,comma", `with"quote`, "spaced"}; !reflect.DeepEqual(back.FeatureNames, want) {
		t.Errorf("feature names %q, want %q", back.FeatureNames, want)
	}
}

func TestWriteCSVRejectsInvalid(t *testing.T) {
	tests := []struct {
		name string
		d    Dataset
	}{
		{"names-short", Dataset{FeatureNames: []string{"a"}, ClassNames: []string{"0"}, Examples: model.Examples{X: []float64{1, 2}, Y: []int{0}, Features: 2}}},
		{"x-short", Dataset{FeatureNames: []string{"a", "b"}, ClassNames: []string{"0"}, Examples: model.Examples{X: []float64{1}, Y: []int{0}, Features: 2}}},
		{"label-out-of-range", Dataset{FeatureNames: []string{"a"}, ClassNames: []string{"0"}, Examples: model.Examples{X: []float64{1}, Y: []int{1}, Features: 1}}},
		{"no-classes", Dataset{FeatureNames: []string{"a"}, Examples: model.Examples{X: []float64{1}, Y: []int{0}, Features: 1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteCSV(&buf, &tc.d); !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
			if buf.Len() != 0 {
				t.Errorf("wrote %d bytes for an invalid dataset", buf.Len())
			}
		})
	}
}

func TestCSVOptionsFromJSON(t *testing.T) {
	var opt CSVOptions
	err := json.Unmarshal([]byte(`{"header":"no","label":"-1","classes":["x","y"],"drop":["0"]}`), &opt)
	if err != nil {
		t.Fatal(err)
	}
	want := CSVOptions{Header: HeaderNo, Label: "-1", Classes: []string{"x", "y"}, Drop: []string{"0"}}
	if !reflect.DeepEqual(opt, want) {
		t.Errorf("got %+v, want %+v", opt, want)
	}
	out, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"header":"no"`) {
		t.Errorf("marshalled %s, want header as text", out)
	}
	if err := json.Unmarshal([]byte(`{"header":"maybe"}`), &opt); !errors.Is(err, ErrCSV) {
		t.Errorf("bad header mode: got %v, want ErrCSV", err)
	}
}

func TestEmbedded(t *testing.T) {
	tests := []struct {
		name           string
		rows, features int
		classes        []string
		firstFeature   string
		counts         []int // rows per class
		maxValue       float64
	}{
		{"breast-cancer", 569, 30, []string{"malignant", "benign"}, "mean_radius", []int{212, 357}, 4254},
		{"digits", 1797, 64, []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}, "pixel_0_0",
			[]int{178, 182, 177, 183, 181, 182, 181, 179, 174, 180}, 16},
		{"wsn", 18914, 2, []string{"normal", "anomaly"}, "humidity", []int{18765, 149}, -1},
	}
	if got, want := EmbeddedNames(), []string{"breast-cancer", "digits", "wsn"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("EmbeddedNames() = %q, want %q", got, want)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Embedded(tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Validate(); err != nil {
				t.Fatal(err)
			}
			if d.Name != tc.name || d.Examples.Len() != tc.rows || d.Examples.Features != tc.features || d.Classes() != len(tc.classes) {
				t.Fatalf("%s: %d × %d, %d classes; want %d × %d, %d classes",
					d.Name, d.Examples.Len(), d.Examples.Features, d.Classes(), tc.rows, tc.features, len(tc.classes))
			}
			if !reflect.DeepEqual(d.ClassNames, tc.classes) || d.FeatureNames[0] != tc.firstFeature {
				t.Errorf("names: classes %q, first feature %q", d.ClassNames, d.FeatureNames[0])
			}
			counts := make([]int, d.Classes())
			for _, y := range d.Examples.Y {
				counts[y]++
			}
			if !reflect.DeepEqual(counts, tc.counts) {
				t.Errorf("rows per class %v, want %v", counts, tc.counts)
			}
			if tc.maxValue >= 0 {
				hi := 0.0
				for _, v := range d.Examples.X {
					hi = max(hi, v)
				}
				if hi != tc.maxValue {
					t.Errorf("largest feature value %g, want %g (raw, unscaled)", hi, tc.maxValue)
				}
			}
			// Each call returns an independent copy.
			again, _ := Embedded(tc.name)
			d.Examples.X[0] = -12345
			if again.Examples.X[0] == -12345 {
				t.Error("two Embedded calls share memory")
			}
		})
	}
}

func TestEmbeddedUnknown(t *testing.T) {
	_, err := Embedded("iris")
	const want = `dataset: unknown embedded dataset "iris"; the embedded datasets are breast-cancer, digits, wsn`
	if !errors.Is(err, ErrUnknown) || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
}

// TestEmbeddedFilesMatchREADME guards against the data files and their
// attribution drifting apart.
func TestEmbeddedFilesMatchREADME(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("data", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	entries, err := data.ReadDir("data")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !bytes.Contains(readme, []byte("`"+e.Name()+"`")) {
			t.Errorf("data/README.md does not mention %s", e.Name())
		}
	}
}

func BenchmarkEmbedded(b *testing.B) {
	for _, name := range EmbeddedNames() {
		b.Run("name="+name, func(b *testing.B) {
			rows := 0
			for b.Loop() {
				d, err := Embedded(name)
				if err != nil {
					b.Fatal(err)
				}
				rows = d.Examples.Len()
			}
			b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
