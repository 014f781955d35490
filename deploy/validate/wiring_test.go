package main

import (
	"errors"
	"strings"
	"testing"
)

// wiringSet is a coordinator-like rendering that fits together: a
// StatefulSet, its headless Service, a public Service and a
// ServiceMonitor.
const wiringSet = `# Source: t/sts.yaml
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: c
spec:
  serviceName: c-internal
  selector:
    matchLabels: {app: c}
  template:
    metadata:
      labels: {app: c}
      annotations:
        prometheus.io/port: "9090"
    spec:
      containers:
        - name: c
          image: tally:dev
          ports:
            - {name: grpc, containerPort: 7070}
            - {name: health, containerPort: 7071}
            - {name: metrics, containerPort: 9090}
          livenessProbe:
            grpc: {port: 7071}
          volumeMounts:
            - {name: job, mountPath: /etc/tally/job}
            - {name: state, mountPath: /var/lib/tally}
      volumes:
        - name: job
          configMap: {name: tally-job}
  volumeClaimTemplates:
    - metadata: {name: state}
      spec:
        accessModes: [ReadWriteOnce]
        resources: {requests: {storage: 1Gi}}
---
# Source: t/svc.yaml
apiVersion: v1
kind: Service
metadata:
  name: c
spec:
  selector: {app: c}
  ports:
    - {name: grpc, port: 7070, targetPort: grpc}
---
# Source: t/svc.yaml
apiVersion: v1
kind: Service
metadata:
  name: c-internal
  labels: {role: internal}
spec:
  clusterIP: None
  selector: {app: c}
  ports:
    - {name: metrics, port: 9090, targetPort: metrics}
---
# Source: t/sm.yaml
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: c
spec:
  selector:
    matchLabels: {role: internal}
  endpoints:
    - {port: metrics}
`

func wiring(t *testing.T, text string) []error {
	t.Helper()
	s, err := newScheme()
	if err != nil {
		t.Fatal(err)
	}
	docs, err := Split("set.yaml", strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	var objs []Named
	for _, d := range docs {
		obj, err := Validate(s, d)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, Named{Doc: d, Obj: obj})
	}
	return Wiring(objs)
}

// TestWiring: the set fits together; each way of breaking one link is
// found, with the object and field named.
func TestWiring(t *testing.T) {
	if errs := wiring(t, wiringSet); len(errs) != 0 {
		t.Fatalf("a set that fits together: %v", errs)
	}
	for _, tc := range []struct {
		name, from, to string
		says           string
	}{
		{"probe on an undeclared port", "grpc: {port: 7071}", "grpc: {port: 7072}",
			"StatefulSet/c: spec.template.spec.containers[0].livenessProbe: port 7072 is not a declared containerPort"},
		{"mount of no volume", "{name: job, mountPath", "{name: jobs, mountPath",
			`StatefulSet/c: spec.template.spec.containers[0].volumeMounts[0].name "jobs": no such volume`},
		{"selector not matching the template", "    matchLabels: {app: c}\n  template", "    matchLabels: {app: d}\n  template",
			"StatefulSet/c: spec.selector.matchLabels map[app:d] does not select its own template's labels"},
		{"governing Service missing", "serviceName: c-internal", "serviceName: c-gone",
			`StatefulSet/c: spec.serviceName "c-gone": no such Service`},
		{"governing Service not headless", "serviceName: c-internal", "serviceName: c",
			`StatefulSet/c: spec.serviceName "c" is not headless`},
		{"Service selecting nothing", "  name: c\nspec:\n  selector: {app: c}", "  name: c\nspec:\n  selector: {app: x}",
			"Service/c: spec.selector map[app:x] selects no pod template"},
		{"Service targetPort not declared", "targetPort: grpc}", "targetPort: grpcs}",
			"Service/c: spec.ports[0].targetPort grpcs is not a containerPort of t/sts.yaml: StatefulSet/c"},
		{"ServiceMonitor selecting no Service", "matchLabels: {role: internal}", "matchLabels: {role: public}",
			"ServiceMonitor/c: spec.selector.matchLabels map[role:public] selects no Service"},
		{"ServiceMonitor port not on the Service", "- {port: metrics}", "- {port: metric}",
			`ServiceMonitor/c: spec.endpoints[0].port "metric" is not a port of Service/c-internal`},
		{"scrape annotation on an undeclared port", `prometheus.io/port: "9090"`, `prometheus.io/port: "9091"`,
			`StatefulSet/c: spec.template.metadata.annotations[prometheus.io/port] "9091" is not a declared containerPort`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := strings.Replace(wiringSet, tc.from, tc.to, 1)
			if text == wiringSet {
				t.Fatalf("case does not change the set (%q not found)", tc.from)
			}
			errs := wiring(t, text)
			found := false
			for _, err := range errs {
				if !errors.Is(err, ErrWiring) {
					t.Errorf("%v is not ErrWiring", err)
				}
				found = found || strings.Contains(err.Error(), tc.says)
			}
			if !found {
				t.Errorf("errors %v; none says %q", errs, tc.says)
			}
		})
	}
}
