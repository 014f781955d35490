package dataset

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/tallyfl/tally/model"
)

// HeaderMode says whether the first row of a CSV file names the columns.
type HeaderMode int

const (
	// HeaderAuto (the zero value) treats the first row as a header when one
	// of its feature fields is not a number. The label column and dropped
	// columns are not consulted, because string class labels are legitimate
	// data. A label or dropped column given by name implies a header. A
	// header whose feature names all look like numbers ("1,2,3,class") is
	// taken for data: pass HeaderYes for such files.
	HeaderAuto HeaderMode = iota
	// HeaderYes: the first row is a header.
	HeaderYes
	// HeaderNo: the first row is data; features are named f0, f1, ….
	HeaderNo
)

var headerModeNames = [...]string{HeaderAuto: "auto", HeaderYes: "yes", HeaderNo: "no"}

// String returns "auto", "yes" or "no".
func (h HeaderMode) String() string {
	if h >= 0 && int(h) < len(headerModeNames) {
		return headerModeNames[h]
	}
	return "HeaderMode(" + strconv.Itoa(int(h)) + ")"
}

// MarshalText encodes the mode as String does, for YAML and JSON configs.
func (h HeaderMode) MarshalText() ([]byte, error) {
	if h < 0 || int(h) >= len(headerModeNames) {
		return nil, fmt.Errorf("%w: unknown header mode %d", ErrCSV, int(h))
	}
	return []byte(h.String()), nil
}

// UnmarshalText accepts "auto" (or ""), "yes" and "no".
func (h *HeaderMode) UnmarshalText(b []byte) error {
	switch string(b) {
	case "", "auto":
		*h = HeaderAuto
	case "yes":
		*h = HeaderYes
	case "no":
		*h = HeaderNo
	default:
		return fmt.Errorf("%w: header mode %q: want auto, yes or no", ErrCSV, b)
	}
	return nil
}

// CSVOptions tells ReadCSV how to interpret a file. The zero value reads a
// file with an optional header and the label in the last column.
type CSVOptions struct {
	// Header says whether the first row names the columns; see HeaderMode.
	Header HeaderMode `yaml:"header" json:"header"`
	// Label selects the label column by header name, or by 0-based index
	// ("0" is the first column, "-1" the last). Empty means the last column.
	Label string `yaml:"label" json:"label"`
	// Classes optionally fixes the class names, index = label. A label
	// field must then be one of these names or an integer in
	// [0, len(Classes)); a name match is tried first.
	Classes []string `yaml:"classes" json:"classes"`
	// Drop lists columns (by name or 0-based index, as Label) that are
	// neither features nor the label, such as row ids or timestamps.
	Drop []string `yaml:"drop" json:"drop"`
}

// maxClasses bounds the number of classes integer labels may imply. A label
// of 4,000,000,000 in a corrupted file would otherwise allocate billions of
// class names before any model notices.
const maxClasses = 10000

// CSVError locates a problem in a CSV file. It wraps ErrCSV.
type CSVError struct {
	File       string // the name given to ReadCSV, or the path given to LoadCSV
	Line       int    // 1-based line in the file; 0 when the error concerns the whole file
	Column     int    // 0-based column index; -1 when the error concerns a whole row or file
	ColumnName string // the header name of Column, "" without a header
	Msg        string // what was expected, and what was found
}

// Error formats the location like a compiler would, for example
//
//	dataset: data.csv:17: column "radius" (3): expected a number, got "abc"
func (e *CSVError) Error() string {
	var b strings.Builder
	b.WriteString("dataset: ")
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Column >= 0 {
		if e.ColumnName != "" {
			fmt.Fprintf(&b, "column %q (%d): ", e.ColumnName, e.Column)
		} else {
			fmt.Fprintf(&b, "column %d: ", e.Column)
		}
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap returns ErrCSV.
func (e *CSVError) Unwrap() error { return ErrCSV }

// LoadCSV reads the CSV file at path; see ReadCSV. Errors name the path as
// given.
func LoadCSV(path string, opt CSVOptions) (*Dataset, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCSV, err)
	}
	defer f.Close()
	return ReadCSV(f, path, opt)
}

// ReadCSV reads a labelled CSV table from r. name is used in error messages
// and, without directory and extension, as Dataset.Name.
//
// Every column other than the label and the dropped columns is a feature and
// must hold a finite number in every row: missing values, NaN and Inf are
// errors, since no model in this module can train on them. Fields may be
// quoted and surrounded by spaces; a UTF-8 byte-order mark is skipped.
//
// Labels become integers as follows:
//   - with opt.Classes, a label is a class name or an integer index into it;
//   - otherwise, if every label is an integer k ≥ 0, the label is k and the
//     class names are "0" … "max" (a value that never occurs is a class
//     with no rows);
//   - otherwise, if no label is a number, the distinct labels sorted in
//     byte order are the classes, so "benign" is 0 and "malignant" 1;
//   - anything else (a fractional number, or integers mixed with names) is
//     an error.
//
// All errors are *CSVError values wrapping ErrCSV.
func ReadCSV(r io.Reader, name string, opt CSVOptions) (*Dataset, error) {
	t, err := ReadTable(r, name, opt)
	if err != nil {
		return nil, err
	}
	return t.Label(opt.Classes)
}

// Table is a CSV file read as ReadCSV reads it, its label fields kept as
// written: Label maps them onto class names, which may be learned after
// the file was read (a client reads its file, then asks the job for its
// classes). A Table is immutable and safe for concurrent use.
type Table struct {
	p         csvParser
	ex        model.Examples // without labels
	labels    []string       // the label field of each row, trimmed
	lines     []int          // the line of each label field
	featNames []string
	name      string
}

// LoadTable reads the CSV file at path; see ReadTable.
func LoadTable(path string, opt CSVOptions) (*Table, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCSV, err)
	}
	defer f.Close()
	return ReadTable(f, path, opt)
}

// ReadTable reads a CSV table from r as ReadCSV does, without mapping its
// labels (opt.Classes is not consulted): every error but those of labels
// is found here.
func ReadTable(r io.Reader, name string, opt CSVOptions) (*Table, error) {
	br := bufio.NewReader(r)
	// Spreadsheet exports often start with a byte-order mark, which would
	// otherwise become part of the first column's name.
	if bom, err := br.Peek(3); err == nil && bytes.Equal(bom, []byte{0xEF, 0xBB, 0xBF}) {
		_, _ = br.Discard(3)
	}
	cr := csv.NewReader(br)
	cr.FieldsPerRecord = -1 // field counts are checked here, with a better message
	cr.TrimLeadingSpace = true

	p := csvParser{name: name, cr: cr}
	first, err := p.read()
	if err == io.EOF {
		return nil, p.fileErr("empty file")
	}
	if err != nil {
		return nil, err
	}
	if err := p.layout(first, opt); err != nil {
		return nil, err
	}

	var ex model.Examples
	ex.Features = len(p.features)
	var labels []string
	var labelLines []int
	addRow := func(rec []string) error {
		line, _ := cr.FieldPos(0)
		if len(rec) != p.ncol {
			return p.rowErr(line, fmt.Sprintf("expected %d fields, got %d", p.ncol, len(rec)))
		}
		for _, c := range p.features {
			s := strings.TrimSpace(rec[c])
			v, err := strconv.ParseFloat(s, 64)
			if err != nil && !errors.Is(err, strconv.ErrRange) {
				l, _ := cr.FieldPos(c)
				return p.fieldErr(l, c, fmt.Sprintf("expected a number, got %q", rec[c]))
			}
			if math.IsNaN(v) || math.IsInf(v, 0) {
				l, _ := cr.FieldPos(c)
				return p.fieldErr(l, c, fmt.Sprintf("expected a finite number, got %q", rec[c]))
			}
			ex.X = append(ex.X, v)
		}
		l, _ := cr.FieldPos(p.label)
		labels = append(labels, strings.TrimSpace(rec[p.label]))
		labelLines = append(labelLines, l)
		return nil
	}
	if !p.header {
		if err := addRow(first); err != nil {
			return nil, err
		}
	}
	for {
		rec, err := p.read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if err := addRow(rec); err != nil {
			return nil, err
		}
	}
	if len(labels) == 0 {
		return nil, p.fileErr("no data rows")
	}
	for i, s := range labels {
		if s == "" {
			return nil, p.fieldErr(labelLines[i], p.label, "expected a label, got an empty field")
		}
	}

	featNames := make([]string, len(p.features))
	for i, c := range p.features {
		if p.header && p.names[c] != "" {
			featNames[i] = p.names[c]
		} else {
			featNames[i] = "f" + strconv.Itoa(i)
		}
	}
	p.cr = nil
	base := filepath.Base(name)
	return &Table{p: p, ex: ex, labels: labels, lines: labelLines, featNames: featNames, name: strings.TrimSuffix(base, filepath.Ext(base))}, nil
}

// Features is the number of feature columns.
func (t *Table) Features() int { return t.ex.Features }

// Rows is the number of data rows.
func (t *Table) Rows() int { return len(t.labels) }

// LabelColumn is the label column's header name, or its 0-based index
// without a header.
func (t *Table) LabelColumn() string {
	if t.p.header && t.p.names[t.p.label] != "" {
		return t.p.names[t.p.label]
	}
	return strconv.Itoa(t.p.label)
}

// Label maps the label fields onto classes as ReadCSV does with
// CSVOptions.Classes = classes (nil: the file's own numbering, see
// ReadCSV) and returns the dataset, whose feature values are shared with
// t. A label that is not one of classes, nor an index into them, is a
// *CSVError naming the file, line, column and value.
func (t *Table) Label(classes []string) (*Dataset, error) {
	ys, classNames, err := t.p.mapLabels(t.labels, t.lines, classes)
	if err != nil {
		return nil, err
	}
	ex := t.ex
	ex.Y = ys
	return &Dataset{
		Name:         t.name,
		FeatureNames: slices.Clone(t.featNames),
		ClassNames:   classNames,
		Examples:     ex,
	}, nil
}

// csvParser holds what ReadCSV learned from the first row.
type csvParser struct {
	name     string
	cr       *csv.Reader
	ncol     int
	header   bool
	names    []string // header fields, trimmed; nil without a header
	label    int      // column index of the label
	features []int    // column indices of the features, in file order
}

func (p *csvParser) read() ([]string, error) {
	rec, err := p.cr.Read()
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return nil, &CSVError{File: p.name, Line: pe.Line, Column: -1, Msg: pe.Err.Error()}
	}
	return rec, err
}

func (p *csvParser) fileErr(msg string) error {
	return &CSVError{File: p.name, Column: -1, Msg: msg}
}

func (p *csvParser) rowErr(line int, msg string) error {
	return &CSVError{File: p.name, Line: line, Column: -1, Msg: msg}
}

func (p *csvParser) fieldErr(line, col int, msg string) error {
	e := &CSVError{File: p.name, Line: line, Column: col, Msg: msg}
	if p.header {
		e.ColumnName = p.names[col]
	}
	return e
}

// layout decides whether first is a header and which columns are the label,
// the features and the dropped ones.
func (p *csvParser) layout(first []string, opt CSVOptions) error {
	p.ncol = len(first)
	line, _ := p.cr.FieldPos(0)
	byName := func(s string) bool { _, err := strconv.Atoi(strings.TrimSpace(s)); return s != "" && err != nil }

	needHeader := byName(opt.Label) || slices.ContainsFunc(opt.Drop, byName)
	switch opt.Header {
	case HeaderYes:
		p.header = true
	case HeaderNo:
		if needHeader {
			return p.fileErr("columns are selected by name but the header mode is \"no\"")
		}
	case HeaderAuto:
		if needHeader {
			p.header = true
			break
		}
		// Columns are selected by index only here; resolve them against the
		// first row to know which fields must be numbers in a data row.
		skip := map[int]bool{}
		for _, s := range append([]string{opt.Label}, opt.Drop...) {
			if c, err := p.index(s); err == nil {
				skip[c] = true
			}
		}
		for c, f := range first {
			if skip[c] {
				continue
			}
			if _, err := strconv.ParseFloat(strings.TrimSpace(f), 64); err != nil && !errors.Is(err, strconv.ErrRange) {
				p.header = true
				break
			}
		}
	default:
		return p.fileErr(fmt.Sprintf("unknown header mode %d", int(opt.Header)))
	}
	if p.header {
		p.names = make([]string, len(first))
		for i, f := range first {
			p.names[i] = strings.TrimSpace(f)
		}
	}

	label, err := p.column(opt.Label, "label")
	if err != nil {
		return err
	}
	p.label = label
	dropped := map[int]bool{}
	for _, s := range opt.Drop {
		c, err := p.column(s, "dropped")
		if err != nil {
			return err
		}
		if c == label {
			return p.fileErr(fmt.Sprintf("dropped column %q is the label column", s))
		}
		dropped[c] = true
	}
	for c := range p.ncol {
		if c != label && !dropped[c] {
			p.features = append(p.features, c)
		}
	}
	if len(p.features) == 0 {
		return p.rowErr(line, fmt.Sprintf("expected at least one feature column besides the label, got %d columns", p.ncol))
	}
	return nil
}

// index resolves a 0-based column index (negative counts from the end).
func (p *csvParser) index(s string) (int, error) {
	if s == "" {
		return p.ncol - 1, nil
	}
	k, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, err
	}
	c := k
	if k < 0 {
		c = p.ncol + k
	}
	if c < 0 || c >= p.ncol {
		return 0, p.fileErr(fmt.Sprintf("column index %d is out of range: the file has %d columns", k, p.ncol))
	}
	return c, nil
}

// column resolves a column given by index or header name; role ("label",
// "dropped") goes into the error message.
func (p *csvParser) column(s, role string) (int, error) {
	c, err := p.index(s)
	if err == nil {
		return c, nil
	}
	var ce *CSVError
	if errors.As(err, &ce) {
		ce.Msg = role + " " + ce.Msg
		return 0, ce
	}
	want := strings.TrimSpace(s)
	found := -1
	for i, n := range p.names {
		if n != want {
			continue
		}
		if found >= 0 {
			return 0, p.fileErr(fmt.Sprintf("%s column %q is ambiguous: columns %d and %d have that name", role, want, found, i))
		}
		found = i
	}
	if found < 0 {
		quoted := make([]string, len(p.names))
		for i, n := range p.names {
			quoted[i] = strconv.Quote(n)
		}
		return 0, p.fileErr(fmt.Sprintf("%s column %q not found; the columns are %s", role, want, strings.Join(quoted, ", ")))
	}
	return found, nil
}

// labelKind classifies one label field.
type labelKind int

const (
	kindInt  labelKind = iota // an integer, possibly written "3.0"
	kindFrac                  // a number that is not an integer, NaN or Inf
	kindName                  // anything else
)

func classifyLabel(s string) (labelKind, int) {
	if k, err := strconv.Atoi(s); err == nil {
		return kindInt, k
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return kindName, 0
	}
	// Tools such as pandas write integer labels of a float column as "1.0";
	// those are accepted as integers. 2^53 keeps the conversion exact.
	if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
		return kindInt, int(v)
	}
	return kindFrac, 0
}

// mapLabels turns label fields into class indices; see ReadCSV.
func (p *csvParser) mapLabels(labels []string, lines []int, classes []string) ([]int, []string, error) {
	ys := make([]int, len(labels))
	for i, s := range labels {
		if s == "" {
			return nil, nil, p.fieldErr(lines[i], p.label, "expected a label, got an empty field")
		}
	}
	if len(classes) > 0 {
		index := make(map[string]int, len(classes))
		quoted := make([]string, len(classes))
		for i, c := range classes {
			if j, dup := index[c]; dup {
				return nil, nil, p.fileErr(fmt.Sprintf("class name %q is given twice (classes %d and %d)", c, j, i))
			}
			index[c] = i
			quoted[i] = strconv.Quote(c)
		}
		for i, s := range labels {
			if k, ok := index[s]; ok {
				ys[i] = k
				continue
			}
			kind, k := classifyLabel(s)
			if kind == kindInt && k >= 0 && k < len(classes) {
				ys[i] = k
				continue
			}
			if len(quoted) > 12 {
				quoted = append(quoted[:12:12], "…")
			}
			return nil, nil, p.fieldErr(lines[i], p.label, fmt.Sprintf(
				"expected a class name (%s) or an integer in [0, %d), got %q", strings.Join(quoted, ", "), len(classes), s))
		}
		return ys, slices.Clone(classes), nil
	}

	firstKind, _ := classifyLabel(labels[0])
	maxLabel := 0
	for i, s := range labels {
		kind, k := classifyLabel(s)
		switch {
		case kind == kindFrac:
			return nil, nil, p.fieldErr(lines[i], p.label, fmt.Sprintf("expected an integer label or a class name, got %q", s))
		case kind != firstKind && firstKind == kindInt:
			return nil, nil, p.fieldErr(lines[i], p.label, fmt.Sprintf("expected an integer label like the rows above, got %q", s))
		case kind != firstKind:
			return nil, nil, p.fieldErr(lines[i], p.label, fmt.Sprintf("expected a class name like the rows above, got the number %q", s))
		case kind == kindInt && k < 0:
			return nil, nil, p.fieldErr(lines[i], p.label, fmt.Sprintf("expected a label ≥ 0, got %q", s))
		case kind == kindInt && k >= maxClasses:
			return nil, nil, p.fieldErr(lines[i], p.label, fmt.Sprintf("expected a label below %d, got %q", maxClasses, s))
		}
		ys[i] = k
		maxLabel = max(maxLabel, k)
	}
	if firstKind == kindInt {
		names := make([]string, maxLabel+1)
		for k := range names {
			names[k] = strconv.Itoa(k)
		}
		return ys, names, nil
	}
	names := slices.Clone(labels)
	slices.Sort(names)
	names = slices.Compact(names)
	if len(names) > maxClasses {
		return nil, nil, p.fileErr(fmt.Sprintf("expected at most %d distinct labels, got %d", maxClasses, len(names)))
	}
	for i, s := range labels {
		ys[i], _ = slices.BinarySearch(names, s)
	}
	return ys, names, nil
}

// WriteCSV writes d as CSV: a header of the feature names followed by
// "label", then one row per example with the label as an integer. Values are
// written in the shortest form that parses back to the same float64, so
// ReadCSV(WriteCSV(d)) reproduces Examples bit for bit. Class names are not
// written; pass them back through CSVOptions.Classes. If a feature name looks
// like a number, read the file back with HeaderYes.
func WriteCSV(w io.Writer, d *Dataset) error {
	if err := d.Validate(); err != nil {
		return err
	}
	cw := csv.NewWriter(w)
	row := make([]string, d.Examples.Features+1)
	copy(row, d.FeatureNames)
	row[len(row)-1] = "label"
	if err := cw.Write(row); err != nil {
		return err
	}
	var buf []byte
	for i := range d.Examples.Len() {
		for j, v := range d.Examples.Row(i) {
			buf = strconv.AppendFloat(buf[:0], v, 'g', -1, 64)
			row[j] = string(buf)
		}
		row[len(row)-1] = strconv.Itoa(d.Examples.Y[i])
		if err := cw.Write(row); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}
