package coordinator

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tallyfl/tally/client"
	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/ledger"
	"github.com/tallyfl/tally/manifest"
	"github.com/tallyfl/tally/valuation"
)

// pinnedJob is a 2-round, 5-client HE job (small insecure parameters)
// bound to a signed manifest that lists the clients c0 … c4 with the keys
// in keyFiles, and its receipt key in the job's receipt_key file.
type pinnedJob struct {
	job      engine.Job
	fed      *dataset.Federation
	m        *manifest.Manifest
	keyFiles []string
	dir      string
}

// clientKeyFile writes a client key file (client.Config.KeyFile) with a
// key derived from b and returns its path and public key.
func clientKeyFile(t *testing.T, dir string, b byte) (string, ed25519.PublicKey) {
	t.Helper()
	seed := bytes.Repeat([]byte{b}, ed25519.SeedSize)
	raw, _ := json.Marshal(map[string][]byte{"ed25519_seed": seed})
	path := filepath.Join(dir, fmt.Sprintf("client-%d.key", b))
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
}

func newPinnedJob(t *testing.T, edit func(*manifest.Manifest)) *pinnedJob {
	t.Helper()
	ds, err := dataset.Embedded("breast-cancer")
	if err != nil {
		t.Fatal(err)
	}
	const n = 5
	fed, err := dataset.Federate(ds, dataset.FederationSpec{Clients: n, ValFrac: 0.2, TestFrac: 0.2, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := engine.JobConfig{
		ID: "pinned", Seed: 9, Rounds: 2,
		Data:         engine.DataConfig{Features: ds.Examples.Features, Classes: 2},
		RoundTimeout: engine.Duration(20 * time.Second), Tick: engine.Duration(20 * time.Millisecond),
		Clients:           engine.ClientsConfig{Min: 3, WaitFor: n},
		Scaling:           engine.ScalingConfig{Mode: "federated"},
		SecureAggregation: "he",
		Committee:         engine.CommitteeConfig{Size: 3, Threshold: 2},
		HEParams:          insecureHE(),
		Valuation:         engine.ValuationConfig{Mode: engine.ModeInfluence, Estimator: valuation.Config{Samples: 20}},
		Payment:           engine.PaymentConfig{BudgetPerRound: 10},
		Manifest:          "job.manifest.json",
		ReceiptKey:        "receipt.key",
	}
	p := &pinnedJob{fed: fed, dir: dir}
	for i := range n {
		cfg.Clients.Enrolment = append(cfg.Clients.Enrolment, engine.EnrolmentConfig{ID: fmt.Sprintf("c%d", i), Token: fmt.Sprintf("pinned-token-%d", i)})
	}
	job, err := engine.NewJob(cfg, dir)
	if err != nil {
		t.Fatal(err)
	}
	_, receipt, _ := ed25519.GenerateKey(rand.Reader)
	if err := WriteKeyFile(filepath.Join(dir, "receipt.key"), receipt); err != nil {
		t.Fatal(err)
	}
	pid := job.Params.ID()
	pc := job.Params.Config()
	m := &manifest.Manifest{
		Version: manifest.Version, Job: job.ID,
		Schema: manifest.Schema{Features: job.Data.Features, Classes: job.Data.ClassNames, ModelKind: job.Model.Kind},
		Security: manifest.Security{SecureAggregation: "he", HEParams: hex.EncodeToString(pid[:]), MinLogN: pc.LogN,
			MinLogNoiseFlooding: manifest.LogFlooding(job.Params.NoiseFloodingSigma()), MinGroupSize: job.MinGroupSize},
		Committee:   manifest.Committee{Size: 3, Threshold: 2, Rule: manifest.RuleSHA256Rank, Seed: bytes.Repeat([]byte{5}, 32)},
		Coordinator: manifest.Coordinator{ReceiptKey: manifest.HexBytes(receipt.Public().(ed25519.PublicKey)), TLSCertSHA256: bytes.Repeat([]byte{1}, 32)},
	}
	for i := range n {
		path, pub := clientKeyFile(t, dir, byte(i+1))
		p.keyFiles = append(p.keyFiles, path)
		m.Participants = append(m.Participants, manifest.Participant{ID: fmt.Sprintf("c%d", i), Key: manifest.HexBytes(pub)})
	}
	if edit != nil {
		edit(m)
	}
	_, owner, _ := ed25519.GenerateKey(rand.Reader)
	if err := m.Sign(owner); err != nil {
		t.Fatal(err)
	}
	if err := m.Save(filepath.Join(dir, "job.manifest.json")); err != nil {
		t.Fatal(err)
	}
	if err := bindManifest(&job); err != nil {
		t.Fatal(err)
	}
	p.job, p.m = job, m
	return p
}

// TestManifestJob: an honest coordinator bound to a manifest runs the job
// to its end with clients that hold the manifest: the committee it draws
// passes their check, its receipts verify under the manifest's key. An
// enrolment with c0's token but a key the manifest does not give c0 is
// refused first, and does not use the token up.
func TestManifestJob(t *testing.T) {
	p := newPinnedJob(t, nil)
	store, err := OpenJobStore(filepath.Join(p.dir, "state.db"), p.job, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if !store.PublicKey().Equal(ed25519.PublicKey(p.m.Coordinator.ReceiptKey)) {
		t.Fatalf("the store signs with %x, the manifest pins %x", store.PublicKey(), []byte(p.m.Coordinator.ReceiptKey))
	}
	srv, err := NewServer(ServerConfig{Job: p.job, Validation: p.fed.Validation, Linger: 2 * time.Second, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	done := make(chan struct{})
	var out Outcome
	var runErr error
	go func() {
		defer close(done)
		out, runErr = srv.Run(ctx, lis)
	}()

	// The impostor: c0's token, its own key.
	imp, err := client.New(client.Config{Conn: conn, Token: "pinned-token-0", Data: p.fed.Clients[0], PollWait: time.Second,
		Manifest: p.m, TestOnlyWeakParameters: true})
	if err != nil {
		t.Fatal(err)
	}
	ictx, icancel := context.WithTimeout(ctx, 30*time.Second)
	err = imp.Run(ictx)
	icancel()
	if !errors.Is(err, client.ErrRefused) || !strings.Contains(err.Error(), "not the manifest's key for this client") {
		t.Fatalf("an enrolment with c0's token and another key: %v, want %v saying the key is not the manifest's", err, client.ErrRefused)
	}

	var wg sync.WaitGroup
	receipts := make([]string, len(p.job.Clients.Enrolment))
	for i, e := range p.job.Clients.Enrolment {
		receipts[i] = filepath.Join(p.dir, e.ID+".receipts.jsonl")
		c, err := client.New(client.Config{Conn: conn, Token: e.Token, Data: p.fed.Clients[i], PollWait: time.Second,
			KeyFile: p.keyFiles[i], Manifest: p.m, TestOnlyWeakParameters: true, ReceiptsFile: receipts[i]})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Run(ctx); err != nil {
				t.Errorf("client %s: %v", e.ID, err)
			}
		}()
	}
	wg.Wait()
	<-done
	if runErr != nil {
		t.Fatal(runErr)
	}
	if out.Done == nil || out.Done.FinalRound != p.job.Rounds {
		t.Fatalf("the job ended %+v, want after round %d", out.Done, p.job.Rounds)
	}
	for i, r := range receipts {
		f, err := os.Open(r)
		if err != nil {
			t.Fatalf("client %d kept no receipts: %v", i, err)
		}
		rs, err := ledger.VerifyClientFile(f, ed25519.PublicKey(p.m.Coordinator.ReceiptKey), p.job.Clients.Enrolment[i].ID, nil)
		f.Close()
		if err != nil || len(rs) == 0 {
			t.Errorf("client %d's receipts: %d, %v", i, len(rs), err)
		}
	}
}

// TestManifestContradictions: a job file that contradicts its manifest is
// refused with every differing field named.
func TestManifestContradictions(t *testing.T) {
	p := newPinnedJob(t, nil)
	job := p.job
	job.MinGroupSize = 2
	job.Committee.Threshold = 3
	job.ID = "other"
	err := CheckManifest(job, p.m)
	for _, want := range []string{"min_group_size is 2, the manifest's is at least 3", "committee.threshold is 3, the manifest's is 2", `id is "other", the manifest's is "pinned"`} {
		if !errors.Is(err, ErrManifest) || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckManifest: %v, want %v saying %q", err, ErrManifest, want)
		}
	}
	// A participant list without c4, who is in the job's enrolment.
	m := *p.m
	m.Participants = m.Participants[:4]
	err = CheckManifest(p.job, &m)
	if want := `clients.enrolment[4].id is "c4", the manifest's is not a participant`; !errors.Is(err, ErrManifest) || !strings.Contains(err.Error(), want) {
		t.Errorf("CheckManifest: %v, want %v saying %q", err, ErrManifest, want)
	}
	// A manifest pinning the certificate of an edge the job does not
	// list: that edge would be refused at its first call.
	m = *p.m
	m.Edges = []manifest.Edge{{ID: "edge-7", TLSCertSHA256: bytes.Repeat([]byte{2}, 32)}}
	err = CheckManifest(p.job, &m)
	if want := `edges[0] pins a certificate for edge "edge-7", which the job's edges list does not name`; !errors.Is(err, ErrManifest) || !strings.Contains(err.Error(), want) {
		t.Errorf("CheckManifest: %v, want %v saying %q", err, ErrManifest, want)
	}
	job = p.job
	job.Edges = []engine.EdgeConfig{{ID: "edge-7", PublicKey: strings.Repeat("ab", 32)}}
	if err := CheckManifest(job, &m); err != nil {
		t.Errorf("CheckManifest of a listed, pinned edge: %v", err)
	}
}

// TestIdentityEdgeCert: an edge's certificate file (edges[].tls_cert) is
// operational, as the coordinator's tls_cert is: renewing it (a new
// manifest) resumes the same job; the edges' ids and keys are defining.
func TestIdentityEdgeCert(t *testing.T) {
	p := newPinnedJob(t, nil)
	job := p.job
	job.Edges = []engine.EdgeConfig{{ID: "edge-0", PublicKey: strings.Repeat("ab", 32)}}
	before, err := IdentityOf(job)
	if err != nil {
		t.Fatal(err)
	}
	job.Edges = []engine.EdgeConfig{{ID: "edge-0", PublicKey: strings.Repeat("ab", 32), TLSCert: "tls/edge-0.pem"}}
	after, err := IdentityOf(job)
	if err != nil {
		t.Fatal(err)
	}
	if before.Digest != after.Digest {
		t.Errorf("edges[0].tls_cert changed the job's identity: %v, was %v", after.Fields, before.Fields)
	}
	if job.Edges[0].TLSCert == "" {
		t.Error("IdentityOf cleared the job's own edges[0].tls_cert")
	}
	job.Edges = []engine.EdgeConfig{{ID: "edge-0", PublicKey: strings.Repeat("cd", 32), TLSCert: "tls/edge-0.pem"}}
	if other, err := IdentityOf(job); err != nil || other.Digest == before.Digest {
		t.Errorf("another edge key: identity %v (%v), want another than %s", other.Digest, err, before.Digest)
	}
}

// TestManifestReceiptKeyRefusesOtherState: a state file that holds a
// receipt key other than the job's pinned one is refused, naming both.
func TestManifestReceiptKeyRefusesOtherState(t *testing.T) {
	p := newPinnedJob(t, nil)
	path := filepath.Join(p.dir, "state.db")
	s, err := OpenBoltStore(path, p.job.ID) // a key of its own
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = OpenJobStore(path, p.job, nil)
	if !errors.Is(err, ledger.ErrOtherKey) || !strings.Contains(err.Error(), path) {
		t.Fatalf("OpenJobStore over a state file with another key: %v, want %v naming %s", err, ledger.ErrOtherKey, path)
	}
}
