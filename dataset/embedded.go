package dataset

import (
	"bufio"
	"compress/gzip"
	"embed"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// data holds the sample datasets; see data/README.md for their origin and
// licences. The files are parsed on every call to Embedded, which keeps the
// package free of mutable state; each takes under 10 ms on a 2-core x86-64
// machine (BenchmarkEmbedded: digits 9 ms, wsn 7 ms, breast-cancer 1.2 ms).
//
//go:embed data/breast_cancer.csv data/digits.csv.gz data/wsn_singlehop.csv
var data embed.FS

// EmbeddedNames lists the datasets compiled into the package, sorted:
// "breast-cancer" (569 × 30, 2 classes), "digits" (1797 × 64, 10 classes)
// and "wsn" (18914 × 2, 2 classes).
func EmbeddedNames() []string { return []string{"breast-cancer", "digits", "wsn"} }

// Embedded loads a sample dataset by name and returns a fresh copy the
// caller may modify. Features are raw, unscaled values (see Moments and
// Scaler). An unknown name yields an error wrapping ErrUnknown that lists
// the valid names.
func Embedded(name string) (*Dataset, error) {
	switch name {
	case "breast-cancer":
		return loadBreastCancer()
	case "digits":
		return loadDigits()
	case "wsn":
		return loadWSN()
	}
	return nil, fmt.Errorf("%w %q; the embedded datasets are %s", ErrUnknown, name, strings.Join(EmbeddedNames(), ", "))
}

// breastCancerFeatures are the 30 measurements of the Wisconsin diagnostic
// data, in file order: ten nuclear properties, each as mean, standard error
// and worst (mean of the three largest) over the cells of one image
// (Street, Wolberg & Mangasarian 1993).
func breastCancerFeatures() []string {
	props := []string{"radius", "texture", "perimeter", "area", "smoothness",
		"compactness", "concavity", "concave_points", "symmetry", "fractal_dimension"}
	names := make([]string, 0, 30)
	for _, stat := range []string{"mean_%s", "%s_error", "worst_%s"} {
		for _, p := range props {
			names = append(names, fmt.Sprintf(stat, p))
		}
	}
	return names
}

// loadBreastCancer reads the scikit-learn layout: a first line
// "rows,features,class0,class1" followed by data rows without a header.
func loadBreastCancer() (*Dataset, error) {
	const file = "data/breast_cancer.csv"
	f, err := data.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	first, err := br.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("%w: %s: reading the first line: %w", ErrCSV, file, err)
	}
	meta := strings.Split(strings.TrimSpace(first), ",")
	if len(meta) < 3 {
		return nil, fmt.Errorf("%w: %s: first line %q, want rows,features,class names", ErrCSV, file, first)
	}
	rows, err1 := strconv.Atoi(meta[0])
	feats, err2 := strconv.Atoi(meta[1])
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("%w: %s: first line %q, want rows,features,class names", ErrCSV, file, first)
	}
	d, err := ReadCSV(br, file, CSVOptions{Header: HeaderNo, Classes: meta[2:]})
	if err != nil {
		return nil, err
	}
	if d.Examples.Len() != rows || d.Examples.Features != feats {
		return nil, fmt.Errorf("%w: %s: got %d × %d, the first line promises %d × %d",
			ErrCSV, file, d.Examples.Len(), d.Examples.Features, rows, feats)
	}
	d.Name = "breast-cancer"
	if feats == 30 {
		d.FeatureNames = breastCancerFeatures()
	}
	return d, nil
}

// loadDigits reads 8×8 images of handwritten digits: 64 pixel counts in
// 0..16 (row-major), then the digit.
func loadDigits() (*Dataset, error) {
	const file = "data/digits.csv.gz"
	f, err := data.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCSV, file, err)
	}
	d, err := ReadCSV(zr, file, CSVOptions{Header: HeaderNo, Classes: []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}})
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(io.Discard, zr); err != nil { // verifies the gzip checksum
		return nil, fmt.Errorf("%w: %s: %w", ErrCSV, file, err)
	}
	if d.Examples.Features != 64 {
		return nil, fmt.Errorf("%w: %s: %d features, want 64", ErrCSV, file, d.Examples.Features)
	}
	d.Name = "digits"
	for i := range d.FeatureNames {
		d.FeatureNames[i] = fmt.Sprintf("pixel_%d_%d", i/8, i%8)
	}
	return d, nil
}

// loadWSN reads the single-hop sensor readings. Only humidity and
// temperature are features: the reading number, mote id and indoor flag
// say where and when a reading was taken, not what was measured, and the
// mote id is better used to split the data across clients.
func loadWSN() (*Dataset, error) {
	const file = "data/wsn_singlehop.csv"
	f, err := data.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	d, err := ReadCSV(f, file, CSVOptions{
		Header:  HeaderYes,
		Label:   "label",
		Classes: []string{"normal", "anomaly"},
		Drop:    []string{"reading", "mote_id", "indoor"},
	})
	if err != nil {
		return nil, err
	}
	d.Name = "wsn"
	return d, nil
}
