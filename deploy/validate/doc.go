// Command validate checks Kubernetes objects offline: each YAML document
// of its input (`helm template` output, from files or standard input) is
// decoded strictly into the Go type of the Kubernetes API that its
// apiVersion and kind name — k8s.io/api for the built-in kinds, the
// Prometheus Operator's types for ServiceMonitor. A field the type does not
// have, a value of the wrong type, a duplicate key or a kind it knows no
// type for fails the check, naming the document (helm's "# Source:" line,
// its kind and name) and the field's path.
//
// Then the objects of each file, one rendering, must fit together
// (Wiring): a workload's selector selects its own template, its mounts
// name volumes, its probes and prometheus.io/port annotation name
// declared container ports, a StatefulSet's serviceName is a headless
// Service of the rendering, every Service selects a pod template that
// declares its target ports, and a ServiceMonitor selects a Service with
// its endpoint ports.
//
// It checks shape, not the API server's semantic validation (required
// fields, value ranges, cross-field rules): a strictly decoded object may
// still be refused by a cluster. What it catches is what `helm lint` does
// not: a misspelt or misplaced field, which the API server would drop
// silently or refuse at install time.
//
// Usage: validate [FILE ...]   (no file: standard input)
package main
