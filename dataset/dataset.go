package dataset

import (
	"errors"
	"fmt"

	"github.com/tallyfl/tally/model"
)

// Sentinel errors. Every error this package returns wraps one of them, so
// callers can tell the cause apart with errors.Is.
var (
	// ErrCSV: a CSV file could not be read into a Dataset. The wrapped
	// *CSVError says where (file, line, column) and what was expected.
	ErrCSV = errors.New("dataset: malformed CSV")
	// ErrUnknown: Embedded was asked for a name it does not have.
	ErrUnknown = errors.New("dataset: unknown embedded dataset")
	// ErrInvalid: a Dataset or Examples value is internally inconsistent
	// (X not Len×Features, labels out of range, names of the wrong length).
	ErrInvalid = errors.New("dataset: invalid dataset")
	// ErrSplit: Split was given fractions it cannot honour.
	ErrSplit = errors.New("dataset: invalid split")
	// ErrPartition: Partition was given a bad spec or too few rows.
	ErrPartition = errors.New("dataset: cannot partition")
	// ErrCorruption: a corruption string or value is not valid.
	ErrCorruption = errors.New("dataset: invalid corruption")
	// ErrMoments: moments of a different shape were combined, or a flat
	// moment vector has the wrong length or non-finite entries.
	ErrMoments = errors.New("dataset: invalid moments")
	// ErrScaler: a Scaler does not fit the data or holds unusable values.
	ErrScaler = errors.New("dataset: invalid scaler")
)

// Dataset is a labelled design matrix together with the names that make it
// readable: one name per feature column and one per class.
//
// Invariants (checked by Validate): len(FeatureNames) == Examples.Features,
// every label lies in [0, len(ClassNames)), and len(Examples.X) ==
// Examples.Len()*Examples.Features.
type Dataset struct {
	Name         string
	FeatureNames []string
	ClassNames   []string // index = label
	Examples     model.Examples
}

// Classes is the number of classes, len(ClassNames). Labels lie in
// [0, Classes()); a class may have no rows (for example when integer labels
// in a CSV file skip a value).
func (d *Dataset) Classes() int { return len(d.ClassNames) }

// Validate checks the invariants listed on Dataset.
func (d *Dataset) Validate() error {
	if len(d.FeatureNames) != d.Examples.Features {
		return fmt.Errorf("%w: %d feature names for %d features", ErrInvalid, len(d.FeatureNames), d.Examples.Features)
	}
	if len(d.ClassNames) == 0 {
		return fmt.Errorf("%w: no class names", ErrInvalid)
	}
	return checkExamples(d.Examples, len(d.ClassNames))
}

// checkExamples reports whether e is well formed: at least one feature, X of
// length Len×Features and, when classes > 0, labels in [0, classes). With
// classes <= 0 labels need only be non-negative.
func checkExamples(e model.Examples, classes int) error {
	if e.Features < 1 {
		return fmt.Errorf("%w: %d features, want at least 1", ErrInvalid, e.Features)
	}
	if len(e.X) != e.Len()*e.Features {
		return fmt.Errorf("%w: X holds %d values, want %d rows × %d features = %d",
			ErrInvalid, len(e.X), e.Len(), e.Features, e.Len()*e.Features)
	}
	for i, y := range e.Y {
		if y < 0 || (classes > 0 && y >= classes) {
			if classes > 0 {
				return fmt.Errorf("%w: row %d has label %d, want one in [0, %d)", ErrInvalid, i, y, classes)
			}
			return fmt.Errorf("%w: row %d has negative label %d", ErrInvalid, i, y)
		}
	}
	return nil
}

// copyExamples returns a deep copy of e, so that functions documented to
// return a copy never alias the caller's slices.
func copyExamples(e model.Examples) model.Examples {
	return model.Examples{
		X:        append([]float64(nil), e.X...),
		Y:        append([]int(nil), e.Y...),
		Features: e.Features,
	}
}
