package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestRehearse runs the chart's rendered pods as local processes, since
// no cluster is at hand: a small kubelet that mounts ConfigMaps, Secrets
// and volume claims as directories (filled from `tally data`'s output, as
// the README's kubectl commands fill them), expands $(VAR) from secret
// references, gives each pod's ports free loopback ports and each Service
// the port of the pod it selects, runs the init containers' commands,
// then the containers' own command lines. The job must complete, every
// demo client must submit every round, the coordinator's state file must
// verify and its receipts name every client in every round. It catches a
// chart whose command lines or file layout the tally command no longer
// accepts.
//
// make chart sets TALLY_BINARY (the static build) and TALLY_REHEARSE (a
// rendering with clients.enabled=true).
func TestRehearse(t *testing.T) { rehearseFrom(t, "TALLY_REHEARSE", false, false) }

// TestRehearseEdge is TestRehearse for the edge layout: the job file lists
// edge-0 with a key from `tally edge keygen`, as the README says, the edge
// key goes into the Secret the README creates, and, when the rendering
// sets edge.tlsSecret (make chart's does), edge-0 gets a TLS certificate
// of its own, named in its edges entry (tls_cert) and pinned by the
// manifest signed again with `tally manifest create`, and into the
// kubernetes.io/tls Secret tally-edge-tls: no file of the edge pod may
// then hold the coordinator's TLS key. The edge Deployment
// runs (one pod: the Service in front of it reaches one replica here)
// between the coordinator and the demo clients. The clients start once the
// edge is serving, as a Service routes to a ready pod only. Beyond
// TestRehearse's checks, the edge must have carried every client's upload
// of every round: a chart whose clients do not join the edge, or whose
// edge tally refuses, fails here.
//
// make chart sets TALLY_REHEARSE_EDGE (a rendering with clients.enabled=true
// and edge.enabled=true).
func TestRehearseEdge(t *testing.T) { rehearseFrom(t, "TALLY_REHEARSE_EDGE", true, false) }

// TestRehearseMTLS is TestRehearse under mutual TLS: the clients' CA goes
// into the Secret tally-client-ca (key ca.crt) and one certificate it
// signed, for every demo client, into the kubernetes.io/tls Secret
// tally-clients-tls. The coordinator must run with --client-ca (the
// rendering sets tls.clientCASecret), so it refuses a client that shows
// no certificate of that CA: a chart whose demo clients are given none
// fails here, each client's handshake refused.
//
// make chart sets TALLY_REHEARSE_MTLS (a rendering with clients.enabled=true,
// tls.clientCASecret and clients.tlsClientSecret).
func TestRehearseMTLS(t *testing.T) { rehearseFrom(t, "TALLY_REHEARSE_MTLS", false, true) }

// TestRehearseEdgeMTLS is TestRehearseEdge under mutual TLS, with
// TestRehearseMTLS's Secrets and, for the edge, a certificate of the
// clients' CA of its own in tally-edge-client-tls, which it shows the
// coordinator; the edge must hold its clients to that CA (--client-ca).
//
// make chart sets TALLY_REHEARSE_EDGE_MTLS (TALLY_REHEARSE_EDGE's rendering
// with tls.clientCASecret, clients.tlsClientSecret and edge.tlsClientSecret).
func TestRehearseEdgeMTLS(t *testing.T) { rehearseFrom(t, "TALLY_REHEARSE_EDGE_MTLS", true, true) }

// The edge id, key file and TLS Secret the README's edge commands use.
const (
	readmeEdgeID        = "edge-0"
	readmeEdgeKey       = "edge.key"
	readmeEdgeTLSSecret = "tally-edge-tls"
)

// The Secrets of mutual TLS: the clients' CA (tls.clientCASecret), the
// demo clients' one certificate (clients.tlsClientSecret) and the edges'
// (edge.tlsClientSecret).
const (
	readmeClientCASecret      = "tally-client-ca"
	readmeClientsTLSSecret    = "tally-clients-tls"
	readmeEdgeClientTLSSecret = "tally-edge-client-tls"
)

// rehearseFrom rehearses the rendering the environment variable env names
// with the binary TALLY_BINARY names, and skips without them.
func rehearseFrom(t *testing.T, env string, edges, mutual bool) {
	bin, rendered := os.Getenv("TALLY_BINARY"), os.Getenv(env)
	if bin == "" || rendered == "" {
		t.Skipf("TALLY_BINARY and %s not set (make chart sets them)", env)
	}
	rehearse(t, bin, rendered, edges, mutual)
}

// rehearse runs rendered's pods: with edges, the edge layout; with mutual,
// under mutual TLS, which the rendering's coordinator (and edge) must ask
// for.
func rehearse(t *testing.T, bin, rendered string, edges, mutual bool) {
	const rounds, nClients = 3, 3
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	jobDir := t.TempDir()
	if out, err := exec.CommandContext(ctx, bin, "data", "--dataset", "breast-cancer", "--clients", fmt.Sprint(nClients), "--rounds", fmt.Sprint(rounds), "--out", jobDir).CombinedOutput(); err != nil {
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
	if edges {
		// bin/tally edge keygen --key /tmp/job/edge.key, and its public
		// half in job.yaml's edges, before the ConfigMap is made.
		out, err := exec.CommandContext(ctx, bin, "edge", "keygen", "--key", file(readmeEdgeKey)).Output()
		if err != nil {
			t.Fatalf("tally edge keygen: %v", err)
		}
		jf, err := os.OpenFile(file("job.yaml"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = fmt.Fprintf(jf, "edges:\n    - id: %s\n      public_key: %s\n", readmeEdgeID, bytes.TrimSpace(out))
		// The edge's own certificate (openssl req -x509 … in the
		// README), which its entry names, and the manifest signed again
		// to pin it: tally manifest create --job job.yaml --owner-key
		// owner.key --participant-key ID=ID.csv.key ….
		if err == nil {
			writeEdgeCert(t, file("edge-tls.pem"), file("edge-tls.key"))
			_, err = fmt.Fprintf(jf, "      tls_cert: edge-tls.pem\n")
		}
		if cerr := jf.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
		args := []string{"manifest", "create", "--job", file("job.yaml"), "--owner-key", file("owner.key")}
		for id := range tokens {
			args = append(args, "--participant-key", id+"="+file(id+".csv.key"))
		}
		if out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("tally manifest create: %v\n%s", err, out)
		}
	}
	configMaps := map[string]map[string]string{"tally-job": {
		"job.yaml": file("job.yaml"), "job.manifest.json": file("job.manifest.json"),
		"validation.csv": file("validation.csv"), "test.csv": file("test.csv")}}
	secrets := map[string]map[string]string{
		"tally-job-secrets":     {"receipt.key": file("receipt.key"), "tokens": file("breast-cancer-job.tokens")},
		"tally-coordinator-tls": {"tls.crt": file("tls/coordinator.pem"), "tls.key": file("tls/coordinator.key")},
		"tally-clients":         {},
	}
	if edges {
		secrets["tally-edge-key"] = map[string]string{readmeEdgeKey: file(readmeEdgeKey)}
		secrets[readmeEdgeTLSSecret] = map[string]string{"tls.crt": file("edge-tls.pem"), "tls.key": file("edge-tls.key")}
	}
	if mutual {
		// openssl req -x509 … for the CA, then a certificate it signs for
		// the demo clients, one for all of them, and one for the edges.
		ca, caKey := writeCert(t, file("clients-ca.pem"), "", &x509.Certificate{Subject: pkix.Name{CommonName: "tally demo clients' CA"},
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, nil, nil)
		secrets[readmeClientCASecret] = map[string]string{"ca.crt": file("clients-ca.pem")}
		clientCert := func(secret, name string) {
			writeCert(t, file(name+".pem"), file(name+".key"), &x509.Certificate{Subject: pkix.Name{CommonName: name},
				KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, ca, caKey)
			secrets[secret] = map[string]string{"tls.crt": file(name + ".pem"), "tls.key": file(name + ".key")}
		}
		clientCert(readmeClientsTLSSecret, "clients-tls")
		if edges {
			clientCert(readmeEdgeClientTLSSecret, "edge-client-tls")
		}
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
	var objs []Named
	var services []*corev1.Service
	for _, d := range docs {
		obj, err := Validate(s, d)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, Named{Doc: d, Obj: obj})
		if v, ok := obj.(*corev1.Service); ok {
			services = append(services, v)
		}
	}
	// One pod per workload (StatefulSet, Deployment). Every container
	// port of a pod gets a free loopback port of its own, as pods have
	// addresses of their own; a Service's name and port reach the port
	// its targetPort names on the one pod it selects.
	pods := workloads(objs)
	listen := make([]map[int32]string, len(pods)) // pod → container port → 127.0.0.1:NNNN
	for i, w := range pods {
		listen[i] = map[int32]string{}
		for _, c := range w.spec.Containers {
			for _, p := range c.Ports {
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				listen[i][p.ContainerPort] = l.Addr().String()
				l.Close()
			}
		}
	}
	var reachable []string // Service name:port → address, for every pod's replacer
	for _, svc := range services {
		var selected []int
		for i, w := range pods {
			if len(svc.Spec.Selector) > 0 && subset(svc.Spec.Selector, w.labels) {
				selected = append(selected, i)
			}
		}
		if len(selected) != 1 {
			t.Fatalf("Service %s selects %d workloads; this rehearsal routes a Service to one", svc.Name, len(selected))
		}
		w := pods[selected[0]]
		for _, sp := range svc.Spec.Ports {
			target := containerPort(w.spec, sp.TargetPort)
			if sp.TargetPort.IntValue() == 0 && sp.TargetPort.StrVal == "" {
				target = sp.Port // targetPort defaults to port
			}
			addr, ok := listen[selected[0]][target]
			if !ok {
				t.Fatalf("Service %s port %d: %s declares no port %s", svc.Name, sp.Port, w.where, sp.TargetPort.String())
			}
			reachable = append(reachable, fmt.Sprintf("%s:%d", svc.Name, sp.Port), addr)
		}
	}
	network := make([]*strings.Replacer, len(pods))
	for i := range pods {
		r := slices.Clone(reachable)
		for port, addr := range listen[i] {
			r = append(r, fmt.Sprintf("0.0.0.0:%d", port), addr)
		}
		network[i] = strings.NewReplacer(r...)
	}

	// mount builds a pod's filesystem under root and returns the
	// container path → host path rewrites, longest first.
	mount := func(root string, spec corev1.PodSpec, claims []string, mounts []corev1.VolumeMount) [][2]string {
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
				if !slices.Contains(claims, m.Name) {
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
	command := func(root string, pod int, c corev1.Container) *exec.Cmd {
		t.Helper()
		w := pods[pod]
		rw := mount(root, w.spec, w.claims, c.VolumeMounts)
		env := map[string]string{}
		for _, e := range c.Env {
			switch {
			case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
				ref := e.ValueFrom.SecretKeyRef
				v, ok := literals[ref.Name+"/"+ref.Key]
				if !ok {
					t.Fatalf("%s: env %s: Secret %s has no key %q", w.where, e.Name, ref.Name, ref.Key)
				}
				env[e.Name] = v
			case e.ValueFrom == nil:
				env[e.Name] = e.Value
			}
		}
		// One pass, longest mount first: replacing mount by mount
		// rewrote /etc/tally/edge-tls and then the /etc/tally/edge inside
		// its host path again.
		var pairs []string
		for _, r := range rw {
			pairs = append(pairs, r[0], r[1])
		}
		paths := strings.NewReplacer(pairs...)
		argv := slices.Concat(c.Command, c.Args)
		for i, a := range argv {
			for k, v := range env {
				a = strings.ReplaceAll(a, "$("+k+")", v)
			}
			argv[i] = network[pod].Replace(paths.Replace(a))
		}
		if len(c.Command) == 0 {
			// The image's ENTRYPOINT.
			return exec.CommandContext(ctx, bin, argv...)
		}
		return exec.CommandContext(ctx, argv[0], argv[1:]...)
	}

	var coordinator *proc
	var clients, edgeProcs []*proc
	var stateDir string
	for i, w := range pods {
		root := t.TempDir()
		for _, c := range w.spec.InitContainers {
			if out, err := command(root, i, c).CombinedOutput(); err != nil {
				t.Fatalf("%s: init container %s: %v\n%s", w.where, c.Name, err, out)
			}
		}
		if n := len(w.spec.Containers); n != 1 {
			t.Fatalf("%s: %d containers, want 1", w.where, n)
		}
		p := &proc{name: w.where, cmd: command(root, i, w.spec.Containers[0]), out: &syncBuffer{}, done: make(chan error, 1)}
		p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
		if component := w.labels["app.kubernetes.io/component"]; mutual && component != "client" &&
			!slices.ContainsFunc(p.cmd.Args, func(a string) bool { return strings.HasPrefix(a, "--client-ca=") }) {
			t.Fatalf("%s: %s runs without --client-ca; this rehearsal wants a rendering under mutual TLS (tls.clientCASecret)", w.where, component)
		}
		switch w.labels["app.kubernetes.io/component"] {
		case "coordinator":
			coordinator = p
			stateDir = filepath.Join(root, "var/lib/tally")
		case "client":
			clients = append(clients, p)
		case "edge":
			edgeProcs = append(edgeProcs, p)
			if ownCert := slices.ContainsFunc(w.spec.Volumes, func(v corev1.Volume) bool {
				return v.Secret != nil && v.Secret.SecretName == readmeEdgeTLSSecret
			}); ownCert {
				noFileHolds(t, root, file("tls/coordinator.key"), w.where)
			}
		default:
			t.Fatalf("%s: a component this rehearsal does not know", w.where)
		}
	}
	wantEdges := 0
	if edges {
		wantEdges = 1
	}
	if coordinator == nil || len(clients) != nClients || len(edgeProcs) != wantEdges {
		t.Fatalf("rendering has coordinator %v, %d clients and %d edges, want one, %d and %d", coordinator != nil, len(clients), len(edgeProcs), nClients, wantEdges)
	}
	t.Logf("coordinator: %s", strings.Join(coordinator.cmd.Args, " "))
	// A coordinator or an edge that fails (a flag it does not know, a
	// file it cannot read) or exits before it is stopped stops the
	// clients at once rather than at the deadline.
	for _, p := range append([]*proc{coordinator}, edgeProcs...) {
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			err := p.cmd.Wait()
			if !p.stopped.Load() {
				cancel()
			}
			p.done <- err
		}()
	}
	for _, p := range edgeProcs {
		t.Logf("edge: %s", strings.Join(p.cmd.Args, " "))
		ready := "clients join" // printed once it listens
		for deadline := time.Now().Add(time.Minute); !strings.Contains(p.out.String(), ready); {
			select {
			case err := <-p.done:
				t.Fatalf("%s exited (%v) before serving its clients:\n%s\ncoordinator:\n%s", p.name, err, p.out, coordinator.out)
			case <-time.After(50 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not say %q within a minute:\n%s", p.name, ready, p.out)
			}
		}
	}
	for _, p := range clients {
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range clients {
		if err := p.cmd.Wait(); err != nil {
			t.Errorf("%s: %v\n%s", p.name, err, p.out)
		} else if want := fmt.Sprintf("job finished; %d model updates submitted", rounds); !strings.Contains(p.out.String(), want) {
			t.Errorf("%s did not say %q:\n%s", p.name, want, p.out)
		}
	}
	for _, p := range edgeProcs {
		if t.Failed() {
			t.Fatalf("%s:\n%s", p.name, p.out)
		}
		// A Deployment's pod is stopped by SIGTERM; the edge then logs
		// what it carried.
		p.stopped.Store(true)
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := <-p.done; err != nil {
			t.Fatalf("%s after SIGTERM: %v\n%s", p.name, err, p.out)
		}
		c, ok := edgeCounts(p.out.String())
		if !ok {
			t.Fatalf("%s logged no \"edge stopped\" line with its counts:\n%s", p.name, p.out)
		}
		t.Logf("%s: %d partials carrying %d client uploads, %d uploads relayed", p.name, c.Partials, c.Summed, c.Relayed)
		// Every client's upload of every round went through the edge:
		// summed into a partial, or relayed whole where the coordinator
		// needs each client's whole update (the projection valuation,
		// tally's he default at this size, coordinator.Service.EdgeTask).
		// None joined the coordinator instead.
		if c.Summed+c.Relayed < rounds*nClients {
			t.Fatalf("%s carried %d uploads in %d partials and relayed %d, want at least %d (%d clients × %d rounds): the clients did not join through it\n%s",
				p.name, c.Summed, c.Partials, c.Relayed, rounds*nClients, nClients, rounds, p.out)
		}
	}
	// The chart's coordinator stays up after the job (--after-done wait),
	// as a StatefulSet's pod must, until it is stopped like a pod is.
	waiting := "job done; waiting for a stop signal"
	for deadline := time.Now().Add(2 * time.Minute); !strings.Contains(coordinator.out.String(), waiting); {
		select {
		case err := <-coordinator.done:
			t.Fatalf("coordinator exited (%v) after the job instead of waiting; want %q:\n%s", err, waiting, coordinator.out)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("coordinator did not say %q within 2 minutes of the clients' end:\n%s", waiting, coordinator.out)
		}
	}
	coordinator.stopped.Store(true)
	if err := coordinator.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-coordinator.done; err != nil {
		t.Fatalf("coordinator after SIGTERM: %v\n%s", err, coordinator.out)
	}
	if want := fmt.Sprintf("done after round %d", rounds); !strings.Contains(coordinator.out.String(), want) {
		t.Fatalf("coordinator did not say %q:\n%s", want, coordinator.out)
	}
	db := filepath.Join(stateDir, "state.db")
	out, err := exec.CommandContext(ctx, bin, "ledger", "verify", "--db", db).CombinedOutput()
	if err != nil {
		t.Fatalf("tally ledger verify: %v\n%s", err, out)
	}
	t.Logf("%s", bytes.TrimSpace(out))
	// The receipts name every client in every round, the edge's too.
	out, err = exec.CommandContext(ctx, bin, "scores", "--db", db, "--format", "json").Output()
	if err != nil {
		t.Fatalf("tally scores: %v", err)
	}
	var standings []struct {
		Client string  `json:"client"`
		Rounds int     `json:"rounds"`
		Value  float64 `json:"value"`
		Payout float64 `json:"payout"`
	}
	if err := json.Unmarshal(out, &standings); err != nil {
		t.Fatalf("tally scores --format json: %v\n%s", err, out)
	}
	got := map[string]int{}
	valued := 0
	for _, st := range standings {
		got[st.Client] = st.Rounds
		t.Logf("receipts of %s: %d rounds, value %.4f, payout %.4f", st.Client, st.Rounds, st.Value, st.Payout)
		if st.Value != 0 {
			valued++
		}
		// The job's budget is paid out at its end: every client holds
		// at least the baseline share.
		if st.Payout <= 0 {
			t.Errorf("the receipts pay %s %.4f, want more than 0 (tally scores: %s)", st.Client, st.Payout, bytes.TrimSpace(out))
		}
	}
	// A job whose every round failed to be valued values everyone at 0
	// (an edge job under projection valuation did, until its uploads
	// were relayed whole).
	if valued == 0 {
		t.Errorf("every client's value is 0: no round was valued (tally scores: %s)", bytes.TrimSpace(out))
	}
	for id := range tokens {
		if got[id] != rounds {
			t.Errorf("the receipts give %s %d rounds, want %d (tally scores: %s)", id, got[id], rounds, bytes.TrimSpace(out))
		}
	}
	if len(got) != len(tokens) {
		t.Errorf("the receipts name %d clients, want %d: %s", len(got), len(tokens), bytes.TrimSpace(out))
	}
}

// writeEdgeCert writes a self-signed TLS certificate for an edge and its
// key (PEM), as openssl req -x509 makes one.
func writeEdgeCert(t *testing.T, certFile, keyFile string) {
	t.Helper()
	writeCert(t, certFile, keyFile, &x509.Certificate{Subject: pkix.Name{CommonName: readmeEdgeID},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}, nil, nil)
}

// writeCert writes the certificate tmpl describes (valid from an hour ago
// for a day), signed by parent's key, or self-signed where parent is nil,
// to certFile and its new key to keyFile, both PEM; with keyFile empty the
// key is only returned (a CA's, that signs in this process alone).
func writeCert(t *testing.T, certFile, keyFile string, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = serial, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if keyFile != "" {
		kder, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, key
}

// noFileHolds fails the test if a file under root (a pod's mounts) holds
// the content of secret.
func noFileHolds(t *testing.T, root, secret, where string) {
	t.Helper()
	want, err := os.ReadFile(secret)
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err == nil && bytes.Contains(b, bytes.TrimSpace(want)) {
			t.Errorf("%s: %s holds the coordinator's TLS key (%s), which an edge with a certificate of its own must not", where, path, filepath.Base(secret))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// proc is one pod's container, run as a local process.
type proc struct {
	name    string
	cmd     *exec.Cmd
	out     *syncBuffer
	done    chan error  // its exit, once
	stopped atomic.Bool // the rehearsal stopped it: its exit is expected
}

// containerPort is the number of port p (a number, or a name) in spec.
func containerPort(spec corev1.PodSpec, p intstr.IntOrString) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, c := range spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == p.StrVal {
				return cp.ContainerPort
			}
		}
	}
	return 0
}

// edgeCount is what `tally edge` logs when it stops.
type edgeCount struct {
	Msg      string `json:"msg"`
	Partials int    `json:"partials"`
	Summed   int    `json:"summed"`
	Relayed  int    `json:"relayed"`
}

// edgeCounts finds the edge's "edge stopped" line (JSON, as tally logs
// when its output is not a terminal) in out.
func edgeCounts(out string) (edgeCount, bool) {
	for line := range strings.SplitSeq(out, "\n") {
		var c edgeCount
		if json.Unmarshal([]byte(line), &c) == nil && c.Msg == "edge stopped" {
			return c, true
		}
	}
	return edgeCount{}, false
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
