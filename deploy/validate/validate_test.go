package main

import (
	"errors"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
)

const goodStatefulSet = `# Source: tally/templates/coordinator-statefulset.yaml
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: t-coordinator
spec:
  replicas: 1
  serviceName: t-headless
  selector:
    matchLabels: {app: t}
  template:
    metadata:
      labels: {app: t}
    spec:
      containers:
        - name: coordinator
          image: tally:dev
          ports:
            - name: grpc
              containerPort: 7070
          readinessProbe:
            grpc:
              port: 7071
`

func validate(t *testing.T, text string) error {
	t.Helper()
	s, err := newScheme()
	if err != nil {
		t.Fatal(err)
	}
	docs, err := Split("test.yaml", strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 1 {
		t.Fatalf("Split: %d documents, want 1", len(docs))
	}
	_, err = Validate(s, docs[0])
	return err
}

// TestValidateAccepts decodes a well-formed StatefulSet into its type,
// every field where it belongs.
func TestValidateAccepts(t *testing.T) {
	s, err := newScheme()
	if err != nil {
		t.Fatal(err)
	}
	docs, err := Split("test.yaml", strings.NewReader("---\n# only a comment\n---\n"+goodStatefulSet))
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 1 || docs[0].Source != "tally/templates/coordinator-statefulset.yaml" {
		t.Fatalf("Split: %+v, want the one document with its Source", docs)
	}
	obj, err := Validate(s, docs[0])
	if err != nil {
		t.Fatal(err)
	}
	ss, ok := obj.(*appsv1.StatefulSet)
	if !ok {
		t.Fatalf("decoded a %T, want *appsv1.StatefulSet", obj)
	}
	c := ss.Spec.Template.Spec.Containers[0]
	if c.Ports[0].ContainerPort != 7070 || c.ReadinessProbe.GRPC.Port != 7071 {
		t.Errorf("decoded container %+v: ports or probe lost", c)
	}
}

// TestValidateRejects: each way a document can be wrong in shape fails,
// with the sentinel, the document and the field named.
func TestValidateRejects(t *testing.T) {
	for _, tc := range []struct {
		name, from, to string
		want           error
		says           []string
	}{
		{"unknown field", "          image: tally:dev\n", "          image: tally:dev\n          imagePullPolcy: Always\n", ErrDecode,
			[]string{`unknown field "spec.template.spec.containers[0].imagePullPolcy"`}},
		{"field at the wrong level", "  replicas: 1\n", "  replicas: 1\n  containers: []\n", ErrDecode,
			[]string{`unknown field "spec.containers"`}},
		{"wrong type", "containerPort: 7070", "containerPort: grpc", ErrDecode,
			[]string{"containerPort", "int32"}},
		{"number for a string", "image: tally:dev", "image: 7", ErrDecode,
			[]string{"image", "string"}},
		{"duplicate key", "  replicas: 1\n", "  replicas: 1\n  replicas: 2\n", ErrDecode,
			[]string{`"replicas"`}},
		{"unknown kind", "kind: StatefulSet", "kind: StatefulSett", ErrUnknownKind, nil},
		{"unknown apiVersion", "apiVersion: apps/v1", "apiVersion: apps/v2", ErrUnknownKind, nil},
		{"no name", "  name: t-coordinator\n", "  labels: {}\n", ErrObject, []string{"metadata.name"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := strings.Replace(goodStatefulSet, tc.from, tc.to, 1)
			if text == goodStatefulSet {
				t.Fatalf("case does not change the document (%q not found)", tc.from)
			}
			err := validate(t, text)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Validate: %v, want %v", err, tc.want)
			}
			for _, s := range append(tc.says, "tally/templates/coordinator-statefulset.yaml (document 1") {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
		})
	}
}
