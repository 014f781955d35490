package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Errors of Validate, each wrapped with the document it is about.
var (
	ErrUnknownKind = errors.New("validate: no API type for this apiVersion and kind")
	ErrDecode      = errors.New("validate: document does not decode into its API type")
	ErrObject      = errors.New("validate: object incomplete")
)

// newScheme knows the API groups a chart of tally's may render.
func newScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, autoscalingv2.AddToScheme, batchv1.AddToScheme,
		networkingv1.AddToScheme, policyv1.AddToScheme, rbacv1.AddToScheme, monitoringv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Document is one YAML document of a stream: its text, where it came
// from, and its place in the stream.
type Document struct {
	File   string // the stream it was read from
	Source string // helm's "# Source:" comment, or the file name
	Index  int    // 1-based, in its file
	Text   []byte
}

// Split cuts a YAML stream at its "---" lines, keeping the documents that
// hold more than comments.
func Split(name string, r io.Reader) ([]Document, error) {
	var docs []Document
	var cur bytes.Buffer
	source, index := name, 0
	flush := func() {
		if hasContent(cur.Bytes()) {
			index++
			docs = append(docs, Document{File: name, Source: source, Index: index, Text: bytes.Clone(cur.Bytes())})
		}
		cur.Reset()
		source = name
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "---" || strings.HasPrefix(line, "--- ") {
			flush()
			continue
		}
		if s, ok := strings.CutPrefix(line, "# Source: "); ok {
			source = s
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("validate: read %s: %w", name, err)
	}
	flush()
	return docs, nil
}

func hasContent(b []byte) bool {
	for line := range strings.SplitSeq(string(b), "\n") {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			return true
		}
	}
	return false
}

// Validate decodes doc strictly into the type of its apiVersion and kind
// and returns what it decoded; every error names the document.
func Validate(s *runtime.Scheme, doc Document) (runtime.Object, error) {
	where := fmt.Sprintf("%s (document %d)", doc.Source, doc.Index)
	// YAML to JSON, refusing duplicate keys, which plain YAML decoders
	// resolve silently by keeping the last.
	js, err := yaml.YAMLToJSONStrict(doc.Text)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrDecode, where, err)
	}
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(js, &tm); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrDecode, where, err)
	}
	if tm.APIVersion == "" || tm.Kind == "" {
		return nil, fmt.Errorf("%w: %s: no apiVersion or kind", ErrObject, where)
	}
	where = fmt.Sprintf("%s (document %d, %s %s/%s)", doc.Source, doc.Index, tm.APIVersion, tm.Kind, tm.Metadata.Name)
	gv, err := schema.ParseGroupVersion(tm.APIVersion)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: apiVersion: %v", ErrUnknownKind, where, err)
	}
	obj, err := s.New(gv.WithKind(tm.Kind))
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownKind, where)
	}
	// Strict: unknown and duplicate fields are errors with their path
	// (sigs.k8s.io/json, as the API server's strict field validation).
	strict, err := kjson.UnmarshalStrict(js, obj, kjson.DisallowUnknownFields)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrDecode, where, err)
	}
	if len(strict) > 0 {
		msgs := make([]string, len(strict))
		for i, e := range strict {
			msgs[i] = e.Error()
		}
		return nil, fmt.Errorf("%w: %s: %s", ErrDecode, where, strings.Join(msgs, "; "))
	}
	if tm.Metadata.Name == "" {
		return nil, fmt.Errorf("%w: %s: metadata.name is empty", ErrObject, where)
	}
	return obj, nil
}

func main() {
	s, err := newScheme()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var docs []Document
	read := func(name string, r io.Reader) {
		d, err := Split(name, r)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		docs = append(docs, d...)
	}
	if len(os.Args) == 1 {
		read("<stdin>", os.Stdin)
	}
	for _, name := range os.Args[1:] {
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintln(os.Stderr, "validate:", err)
			os.Exit(2)
		}
		read(name, f)
		f.Close()
	}
	if len(docs) == 0 {
		fmt.Fprintln(os.Stderr, "validate: no documents in the input")
		os.Exit(1)
	}
	// Each file is one rendering: its objects must fit together.
	failed := 0
	byFile := map[string][]Named{}
	var files []string
	for _, d := range docs {
		obj, err := Validate(s, d)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			failed++
			continue
		}
		if _, ok := byFile[d.File]; !ok {
			files = append(files, d.File)
		}
		byFile[d.File] = append(byFile[d.File], Named{Doc: d, Obj: obj})
	}
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "validate: %d of %d documents failed\n", failed, len(docs))
		os.Exit(1)
	}
	for _, f := range files {
		for _, err := range Wiring(byFile[f]) {
			fmt.Fprintf(os.Stderr, "%s: %v\n", f, err)
			failed++
		}
	}
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "validate: %d wiring errors\n", failed)
		os.Exit(1)
	}
	fmt.Printf("validate: %d documents in %d files decode strictly into their API types and fit together\n", len(docs), len(files))
}
