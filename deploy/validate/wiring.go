package main

import (
	"errors"
	"fmt"
	"slices"
	"strconv"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// ErrWiring: objects that decode but do not fit together, as a chart's
// templates can leave them (a Service selecting no pod, a probe on a port
// the container does not declare, a mount of no volume).
var ErrWiring = errors.New("validate: objects do not fit together")

// Named is a decoded object with the document it came from.
type Named struct {
	Doc Document
	Obj runtime.Object
}

// workload is a pod template with what owns it.
type workload struct {
	where    string
	labels   map[string]string
	spec     corev1.PodSpec
	selector map[string]string
	claims   []string // a StatefulSet's volumeClaimTemplates
	service  string   // a StatefulSet's serviceName
	annots   map[string]string
}

func workloads(objs []Named) []workload {
	var ws []workload
	for _, o := range objs {
		switch v := o.Obj.(type) {
		case *appsv1.StatefulSet:
			w := workload{where: fmt.Sprintf("%s: StatefulSet/%s", o.Doc.Source, v.Name), labels: v.Spec.Template.Labels, spec: v.Spec.Template.Spec,
				service: v.Spec.ServiceName, annots: v.Spec.Template.Annotations}
			if v.Spec.Selector != nil {
				w.selector = v.Spec.Selector.MatchLabels
			}
			for _, c := range v.Spec.VolumeClaimTemplates {
				w.claims = append(w.claims, c.Name)
			}
			ws = append(ws, w)
		case *appsv1.Deployment:
			w := workload{where: fmt.Sprintf("%s: Deployment/%s", o.Doc.Source, v.Name), labels: v.Spec.Template.Labels, spec: v.Spec.Template.Spec,
				annots: v.Spec.Template.Annotations}
			if v.Spec.Selector != nil {
				w.selector = v.Spec.Selector.MatchLabels
			}
			ws = append(ws, w)
		case *appsv1.DaemonSet:
			w := workload{where: fmt.Sprintf("%s: DaemonSet/%s", o.Doc.Source, v.Name), labels: v.Spec.Template.Labels, spec: v.Spec.Template.Spec,
				annots: v.Spec.Template.Annotations}
			if v.Spec.Selector != nil {
				w.selector = v.Spec.Selector.MatchLabels
			}
			ws = append(ws, w)
		case *batchv1.Job:
			ws = append(ws, workload{where: fmt.Sprintf("%s: Job/%s", o.Doc.Source, v.Name), labels: v.Spec.Template.Labels, spec: v.Spec.Template.Spec,
				annots: v.Spec.Template.Annotations})
		}
	}
	return ws
}

func subset(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// hasPort reports whether the pod declares port p (a number, or a name).
func hasPort(spec corev1.PodSpec, p intstr.IntOrString) bool {
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		for _, cp := range c.Ports {
			if (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) || (p.Type == intstr.String && cp.Name == p.StrVal) {
				return true
			}
		}
	}
	return false
}

// Wiring checks that the objects of one rendering fit together; each
// error names the object and the field.
func Wiring(objs []Named) []error {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrWiring}, a...)...))
	}
	ws := workloads(objs)
	services := map[string]*corev1.Service{}
	for _, o := range objs {
		if s, ok := o.Obj.(*corev1.Service); ok {
			services[s.Name] = s
		}
	}
	for _, w := range ws {
		if w.selector != nil && !subset(w.selector, w.labels) {
			bad("%s: spec.selector.matchLabels %v does not select its own template's labels %v", w.where, w.selector, w.labels)
		}
		if w.service != "" {
			if s := services[w.service]; s == nil {
				bad("%s: spec.serviceName %q: no such Service in the rendering", w.where, w.service)
			} else if s.Spec.ClusterIP != corev1.ClusterIPNone {
				bad("%s: spec.serviceName %q is not headless (clusterIP: None)", w.where, w.service)
			}
		}
		vols := slices.Clone(w.claims)
		for _, v := range w.spec.Volumes {
			vols = append(vols, v.Name)
		}
		for _, group := range []struct {
			field string
			cs    []corev1.Container
		}{{"initContainers", w.spec.InitContainers}, {"containers", w.spec.Containers}} {
			field := group.field
			for i, c := range group.cs {
				for j, m := range c.VolumeMounts {
					if !slices.Contains(vols, m.Name) {
						bad("%s: spec.template.spec.%s[%d].volumeMounts[%d].name %q: no such volume", w.where, field, i, j, m.Name)
					}
				}
				for _, probe := range []struct {
					name string
					p    *corev1.Probe
				}{{"startupProbe", c.StartupProbe}, {"readinessProbe", c.ReadinessProbe}, {"livenessProbe", c.LivenessProbe}} {
					name, p := probe.name, probe.p
					if p == nil {
						continue
					}
					var port *intstr.IntOrString
					switch {
					case p.GRPC != nil:
						v := intstr.FromInt32(p.GRPC.Port)
						port = &v
					case p.HTTPGet != nil:
						port = &p.HTTPGet.Port
					case p.TCPSocket != nil:
						port = &p.TCPSocket.Port
					}
					if port != nil && !hasPort(w.spec, *port) {
						bad("%s: spec.template.spec.%s[%d].%s: port %s is not a declared containerPort", w.where, field, i, name, port.String())
					}
				}
			}
		}
		if a, ok := w.annots["prometheus.io/port"]; ok {
			n, err := strconv.Atoi(a)
			if err != nil || !hasPort(w.spec, intstr.FromInt(n)) {
				bad("%s: spec.template.metadata.annotations[prometheus.io/port] %q is not a declared containerPort", w.where, a)
			}
		}
	}
	for _, o := range objs {
		switch v := o.Obj.(type) {
		case *corev1.Service:
			where := fmt.Sprintf("%s: Service/%s", o.Doc.Source, v.Name)
			if len(v.Spec.Selector) == 0 {
				continue
			}
			var match []workload
			for _, w := range ws {
				if subset(v.Spec.Selector, w.labels) {
					match = append(match, w)
				}
			}
			if len(match) == 0 {
				bad("%s: spec.selector %v selects no pod template in the rendering", where, v.Spec.Selector)
				continue
			}
			for i, p := range v.Spec.Ports {
				target := p.TargetPort
				if target.Type == intstr.Int && target.IntVal == 0 {
					target = intstr.FromInt32(p.Port)
				}
				for _, w := range match {
					if !hasPort(w.spec, target) {
						bad("%s: spec.ports[%d].targetPort %s is not a containerPort of %s", where, i, target.String(), w.where)
					}
				}
			}
		case *monitoringv1.ServiceMonitor:
			where := fmt.Sprintf("%s: ServiceMonitor/%s", o.Doc.Source, v.Name)
			var match []*corev1.Service
			for _, o := range objs {
				if s, ok := o.Obj.(*corev1.Service); ok && subset(v.Spec.Selector.MatchLabels, s.Labels) {
					match = append(match, s)
				}
			}
			if len(match) == 0 {
				bad("%s: spec.selector.matchLabels %v selects no Service in the rendering", where, v.Spec.Selector.MatchLabels)
				continue
			}
			for i, e := range v.Spec.Endpoints {
				for _, s := range match {
					if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == e.Port }) {
						bad("%s: spec.endpoints[%d].port %q is not a port of Service/%s", where, i, e.Port, s.Name)
					}
				}
			}
		}
	}
	return errs
}
