package dataset

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// TestTableLabelsByName: two files whose rows name the classes in opposite
// orders, and a third that numbers them, all map onto the job's classes
// [healthy, diabetic] by name, so each row's label index is the same
// whatever order its file happens to list the names in. (Without the job's
// classes, each file numbered its names alphabetically: diabetic 0,
// healthy 1, the inverse of the job's order.)
func TestTableLabelsByName(t *testing.T) {
	classes := []string{"healthy", "diabetic"}
	for _, tc := range []struct {
		name, csv string
		want      []int
	}{
		{"healthy-first", "x,y\n1,healthy\n2,diabetic\n3,healthy\n", []int{0, 1, 0}},
		{"diabetic-first", "x,y\n1,diabetic\n2,healthy\n3,diabetic\n", []int{1, 0, 1}},
		{"numbers", "x,y\n1,1\n2,0\n3,1.0\n", []int{1, 0, 1}},
		{"mixed", "x,y\n1,diabetic\n2,0\n", []int{1, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab, err := ReadTable(strings.NewReader(tc.csv), tc.name+".csv", CSVOptions{})
			if err != nil {
				t.Fatal(err)
			}
			d, err := tab.Label(classes)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(d.Examples.Y, tc.want) || !slices.Equal(d.ClassNames, classes) {
				t.Errorf("labels %v classes %q, want %v %q", d.Examples.Y, d.ClassNames, tc.want, classes)
			}
		})
	}
}

// TestTableLabelNotInClasses: a label the job does not have, or a number
// out of its range, is an error naming file, line, column and value.
func TestTableLabelNotInClasses(t *testing.T) {
	for _, tc := range []struct {
		name, csv string
		classes   []string
		want      string
	}{
		{"unknown-name", "glucose,outcome\n1,healthy\n2,sick\n", []string{"healthy", "diabetic"},
			`dataset: h.csv:3: column "outcome" (1): expected a class name ("healthy", "diabetic") or an integer in [0, 2), got "sick"`},
		{"out-of-range", "glucose,outcome\n1,1\n2,2\n", []string{"0", "1"},
			`dataset: h.csv:3: column "outcome" (1): expected a class name ("0", "1") or an integer in [0, 2), got "2"`},
		{"negative", "glucose,outcome\n1,-1\n", []string{"0", "1"},
			`dataset: h.csv:2: column "outcome" (1): expected a class name ("0", "1") or an integer in [0, 2), got "-1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab, err := ReadTable(strings.NewReader(tc.csv), "h.csv", CSVOptions{})
			if err != nil {
				t.Fatal(err)
			}
			_, err = tab.Label(tc.classes)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("error %v\nwant  %s", err, tc.want)
			}
			if !errors.Is(err, ErrCSV) {
				t.Errorf("error does not wrap ErrCSV")
			}
		})
	}
	tab, err := ReadTable(strings.NewReader("a,b,outcome\n1,2,x\n"), "h.csv", CSVOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tab.Features() != 2 || tab.Rows() != 1 || tab.LabelColumn() != "outcome" {
		t.Errorf("features %d rows %d label %q", tab.Features(), tab.Rows(), tab.LabelColumn())
	}
}
