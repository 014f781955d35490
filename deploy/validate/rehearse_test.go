package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// TestRehearse runs the chart's rendered pods as local processes, since
// no cluster is at hand: a small kubelet that mounts ConfigMaps, Secrets
// and volume claims as directories (filled from `tally data`'s output, as
// the README's kubectl commands fill them), expands $(VAR) from secret
// references, maps the pods' ports to free loopback ports, runs the init
// containers' commands, then the containers' own command lines. The job
// must complete, every demo client must submit every round, and the
// coordinator's state file must verify. It catches a chart whose command
// lines or file layout the tally command no longer accepts.
//
// make chart sets TALLY_BINARY (the static build) and TALLY_REHEARSE (a
// rendering with clients.enabled=true).
func TestRehearse(t *testing.T) {
	bin, rendered := os.Getenv("TALLY_BINARY"), os.Getenv("TALLY_REHEARSE")
	if bin == "" || rendered == "" {
		t.Skip("TALLY_BINARY and TALLY_REHEARSE not set (make chart sets them)")
	}
	const rounds = 3
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	jobDir := t.TempDir()
	if out, err := exec.CommandContext(ctx, bin, "data", "--dataset", "breast-cancer", "--clients", "3", "--rounds", fmt.Sprint(rounds), "--out", jobDir).CombinedOutput(); err != nil {
		t.Fatalf("tally data: %v\n%s", err, out)
	}
	tokens := map[string]string{} // client id → token, from tokens.txt
	b, err := os.ReadFile(filepath.Join(jobDir, "tokens.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		tokens[f[0]] = f[1]
	}
	// The README's kubectl create commands, as key → file (or literal).
	file := func(name string) string { return filepath.Join(jobDir, name) }
	configMaps := map[string]map[string]string{"tally-job": {
		"job.yaml": file("job.yaml"), "job.manifest.json": file("job.manifest.json"),
		"validation.csv": file("validation.csv"), "test.csv": file("test.csv")}}
	secrets := map[string]map[string]string{
		"tally-job-secrets":     {"receipt.key": file("receipt.key"), "tokens": file("breast-cancer-job.tokens")},
		"tally-coordinator-tls": {"tls.crt": file("tls/coordinator.pem"), "tls.key": file("tls/coordinator.key")},
		"tally-clients":         {},
	}
	literals := map[string]string{} // "secret/key" → value
	for id, tok := range tokens {
		secrets["tally-clients"][id+".csv"] = file(id + ".csv")
		secrets["tally-clients"][id+".csv.key"] = file(id + ".csv.key")
		literals["tally-clients/"+id+".token"] = tok
	}

	f, err := os.Open(rendered)
	if err != nil {
		t.Fatal(err)
	}
	docs, err := Split(rendered, f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	s, err := newScheme()
	if err != nil {
		t.Fatal(err)
	}
	var sets []*appsv1.StatefulSet
	var services []*corev1.Service
	for _, d := range docs {
		obj, err := Validate(s, d)
		if err != nil {
			t.Fatal(err)
		}
		switch v := obj.(type) {
		case *appsv1.StatefulSet:
			sets = append(sets, v)
		case *corev1.Service:
			services = append(services, v)
		}
	}
	// Every container port gets a free loopback port; a Service's name
	// and port reach the same one.
	ports := map[string]string{} // ":7070" → "127.0.0.1:NNNN"
	for _, ss := range sets {
		for _, c := range ss.Spec.Template.Spec.Containers {
			for _, p := range c.Ports {
				key := fmt.Sprintf(":%d", p.ContainerPort)
				if _, ok := ports[key]; !ok {
					l, err := net.Listen("tcp", "127.0.0.1:0")
					if err != nil {
						t.Fatal(err)
					}
					ports[key] = l.Addr().String()
					l.Close()
				}
			}
		}
	}
	var replacer []string
	for key, addr := range ports {
		replacer = append(replacer, "0.0.0.0"+key, addr)
		for _, svc := range services {
			replacer = append(replacer, svc.Name+key, addr)
		}
	}
	network := strings.NewReplacer(replacer...)

	// mount builds a pod's filesystem under root and returns the
	// container path → host path rewrites, longest first.
	mount := func(root string, spec corev1.PodSpec, claims []corev1.PersistentVolumeClaim, mounts []corev1.VolumeMount) [][2]string {
		t.Helper()
		var rw [][2]string
		copyItem := func(dir, src, path string) {
			dst := filepath.Join(dir, path)
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			// Read-only, as the kubelet mounts them; a second container
			// of the pod mounts them afresh.
			os.Remove(dst)
			if err := os.WriteFile(dst, b, 0o440); err != nil {
				t.Fatal(err)
			}
		}
		fill := func(dir string, data map[string]string, what string, items []corev1.KeyToPath) {
			if data == nil {
				t.Fatalf("the pod mounts %s, which the README does not create", what)
			}
			if items == nil {
				for k, src := range data {
					copyItem(dir, src, k)
				}
			}
			for _, it := range items {
				src, ok := data[it.Key]
				if !ok {
					t.Fatalf("%s has no key %q", what, it.Key)
				}
				copyItem(dir, src, it.Path)
			}
		}
		for _, m := range mounts {
			dir := filepath.Join(root, m.MountPath)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			rw = append(rw, [2]string{m.MountPath, dir})
			i := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
			if i < 0 {
				if !slices.ContainsFunc(claims, func(c corev1.PersistentVolumeClaim) bool { return c.Name == m.Name }) {
					t.Fatalf("mount %s: no volume %q", m.MountPath, m.Name)
				}
				// A claim: a directory of the pod's own, kept across its
				// containers (root is per pod).
				continue
			}
			v := spec.Volumes[i].VolumeSource
			switch {
			case v.ConfigMap != nil:
				fill(dir, configMaps[v.ConfigMap.Name], "ConfigMap "+v.ConfigMap.Name, v.ConfigMap.Items)
			case v.Secret != nil:
				fill(dir, secrets[v.Secret.SecretName], "Secret "+v.Secret.SecretName, v.Secret.Items)
			case v.Projected != nil:
				for _, src := range v.Projected.Sources {
					switch {
					case src.ConfigMap != nil:
						fill(dir, configMaps[src.ConfigMap.Name], "ConfigMap "+src.ConfigMap.Name, src.ConfigMap.Items)
					case src.Secret != nil:
						fill(dir, secrets[src.Secret.Name], "Secret "+src.Secret.Name, src.Secret.Items)
					default:
						t.Fatalf("mount %s: a projected source this rehearsal does not know", m.MountPath)
					}
				}
			default:
				t.Fatalf("mount %s: a volume kind this rehearsal does not know", m.MountPath)
			}
		}
		slices.SortFunc(rw, func(a, b [2]string) int { return len(b[0]) - len(a[0]) })
		return rw
	}
	command := func(root string, ss *appsv1.StatefulSet, c corev1.Container) *exec.Cmd {
		t.Helper()
		rw := mount(root, ss.Spec.Template.Spec, ss.Spec.VolumeClaimTemplates, c.VolumeMounts)
		env := map[string]string{}
		for _, e := range c.Env {
			switch {
			case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
				ref := e.ValueFrom.SecretKeyRef
				v, ok := literals[ref.Name+"/"+ref.Key]
				if !ok {
					t.Fatalf("%s: env %s: Secret %s has no key %q", ss.Name, e.Name, ref.Name, ref.Key)
				}
				env[e.Name] = v
			case e.ValueFrom == nil:
				env[e.Name] = e.Value
			}
		}
		argv := slices.Concat(c.Command, c.Args)
		for i, a := range argv {
			for k, v := range env {
				a = strings.ReplaceAll(a, "$("+k+")", v)
			}
			for _, r := range rw {
				a = strings.ReplaceAll(a, r[0], r[1])
			}
			argv[i] = network.Replace(a)
		}
		if len(c.Command) == 0 {
			// The image's ENTRYPOINT.
			return exec.CommandContext(ctx, bin, argv...)
		}
		return exec.CommandContext(ctx, argv[0], argv[1:]...)
	}

	type proc struct {
		name string
		cmd  *exec.Cmd
		out  *syncBuffer
	}
	var coordinator *proc
	var clients []*proc
	var stateDir string
	for _, ss := range sets {
		root := t.TempDir()
		for _, c := range ss.Spec.Template.Spec.InitContainers {
			if out, err := command(root, ss, c).CombinedOutput(); err != nil {
				t.Fatalf("%s: init container %s: %v\n%s", ss.Name, c.Name, err, out)
			}
		}
		if n := len(ss.Spec.Template.Spec.Containers); n != 1 {
			t.Fatalf("%s: %d containers, want 1", ss.Name, n)
		}
		c := ss.Spec.Template.Spec.Containers[0]
		p := &proc{name: ss.Name, cmd: command(root, ss, c), out: &syncBuffer{}}
		p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
		switch ss.Spec.Template.Labels["app.kubernetes.io/component"] {
		case "coordinator":
			coordinator = p
			stateDir = filepath.Join(root, "var/lib/tally")
		case "client":
			clients = append(clients, p)
		}
	}
	if coordinator == nil || len(clients) != 3 {
		t.Fatalf("rendering has coordinator %v and %d clients, want one and 3", coordinator != nil, len(clients))
	}
	t.Logf("coordinator: %s", strings.Join(coordinator.cmd.Args, " "))
	for _, p := range append([]*proc{coordinator}, clients...) {
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
	}
	// A coordinator that fails (a flag it does not know, a file it cannot
	// read) stops the clients at once rather than at the deadline.
	coordDone := make(chan error, 1)
	go func() {
		err := coordinator.cmd.Wait()
		if err != nil {
			cancel()
		}
		coordDone <- err
	}()
	for _, p := range clients {
		if err := p.cmd.Wait(); err != nil {
			t.Errorf("%s: %v\n%s", p.name, err, p.out)
		} else if want := fmt.Sprintf("job finished; %d model updates submitted", rounds); !strings.Contains(p.out.String(), want) {
			t.Errorf("%s did not say %q:\n%s", p.name, want, p.out)
		}
	}
	// The chart's coordinator stays up after the job (--after-done wait),
	// as a StatefulSet's pod must, until it is stopped like a pod is.
	waiting := "job done; waiting for a stop signal"
	for deadline := time.Now().Add(2 * time.Minute); !strings.Contains(coordinator.out.String(), waiting); {
		select {
		case err := <-coordDone:
			t.Fatalf("coordinator exited (%v) after the job instead of waiting; want %q:\n%s", err, waiting, coordinator.out)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("coordinator did not say %q within 2 minutes of the clients' end:\n%s", waiting, coordinator.out)
		}
	}
	if err := coordinator.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-coordDone; err != nil {
		t.Fatalf("coordinator after SIGTERM: %v\n%s", err, coordinator.out)
	}
	if want := fmt.Sprintf("done after round %d", rounds); !strings.Contains(coordinator.out.String(), want) {
		t.Fatalf("coordinator did not say %q:\n%s", want, coordinator.out)
	}
	out, err := exec.CommandContext(ctx, bin, "ledger", "verify", "--db", filepath.Join(stateDir, "state.db")).CombinedOutput()
	if err != nil {
		t.Fatalf("tally ledger verify: %v\n%s", err, out)
	}
	t.Logf("%s", bytes.TrimSpace(out))
}

// syncBuffer is a bytes.Buffer that a process's output copier writes while
// the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
