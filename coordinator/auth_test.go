package coordinator

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/internal/auth"
	"github.com/tallyfl/tally/model"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// testClient calls the API as a client would: it enrols with a key of its
// own and signs every later call with it.
type testClient struct {
	key     ed25519.PrivateKey
	job, id string
	api     tallyv1.CoordinatorServiceClient
}

func newTestClient(t *testing.T, conn grpc.ClientConnInterface, job string) *testClient {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c := &testClient{key: key, job: job}
	c.api = tallyv1.NewCoordinatorServiceClient(auth.Conn(conn, func() (ed25519.PrivateKey, string, string) { return c.key, c.job, c.id }, nil))
	return c
}

func (c *testClient) enroll(ctx context.Context, token string, features int32) (*tallyv1.EnrollResponse, error) {
	r, err := c.api.Enroll(ctx, &tallyv1.EnrollRequest{Token: token, Samples: 5, Features: features, AuthKey: c.key.Public().(ed25519.PublicKey)})
	if err == nil {
		c.id = r.GetClientId()
	}
	return r, err
}

// lockedBuffer is a log sink the server's goroutines may write at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// authJob is a one-round, plaintext job of clients a, b and c: a and b
// have job-file tokens, c only tokens from the tokens file.
func authJob(t *testing.T) engine.Job {
	t.Helper()
	cfg := engine.JobConfig{
		ID: "authjob", Seed: 1, Rounds: 1,
		Data:         engine.DataConfig{Features: 2, Classes: 2},
		RoundTimeout: engine.Duration(time.Minute), Tick: engine.Duration(10 * time.Millisecond),
		Scaling: engine.ScalingConfig{Mode: "none"}, SecureAggregation: "none",
		Clients: engine.ClientsConfig{Min: 2, WaitFor: 3, Enrolment: []engine.EnrolmentConfig{
			{ID: "a", Token: "token-aaaa"}, {ID: "b", TokenSHA256: auth.TokenHash("token-bbbb")}, {ID: "c"}}},
	}
	job, err := engine.NewJob(cfg, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return job
}

// serveAuth runs job's coordinator with the tokens file and TLS config
// given, logging into the returned buffer, until the test ends.
func serveAuth(t *testing.T, job engine.Job, tokens string, tlsCfg *tls.Config) (string, *lockedBuffer) {
	t.Helper()
	addr, logs, _ := serveAuthStore(t, job, tokens, tlsCfg, nil)
	return addr, logs
}

// serveAuthStore is serveAuth on store (nil: in memory), and returns a
// function that stops the server.
func serveAuthStore(t *testing.T, job engine.Job, tokens string, tlsCfg *tls.Config, store engine.Store) (string, *lockedBuffer, func()) {
	t.Helper()
	logs := &lockedBuffer{}
	val := model.Examples{X: []float64{1, 0, 0, 1, 1, 1, 0, 0}, Y: []int{0, 1, 1, 0}, Features: 2}
	srv, err := NewServer(ServerConfig{Job: job, Validation: val, Linger: time.Second, TokensFile: tokens, TLS: tlsCfg,
		Log: slog.New(slog.NewTextHandler(logs, nil)), Store: store})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := srv.Run(ctx, lis); err != nil && ctx.Err() == nil {
			t.Error(err)
		}
	}()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return lis.Addr().String(), logs, stop
}

func dialPlain(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestEnrolmentTokens: a client with no token, a wrong token, an expired
// token, a revoked token, or a token already used is refused with the
// right code and a log line, and nothing changes: the token's rightful
// client keeps its key and the job goes on.
func TestEnrolmentTokens(t *testing.T) {
	job := authJob(t)
	tokens := filepath.Join(t.TempDir(), "authjob.tokens")
	now := time.Now()
	expired, _, err := CreateToken(tokens, job, "c", time.Minute, 1, now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	revoked, rec, err := CreateToken(tokens, job, "c", 0, 1, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := RevokeToken(tokens, rec.TokenID, now); err != nil {
		t.Fatal(err)
	}
	if _, _, err := CreateToken(tokens, job, "nobody", 0, 1, now); err == nil {
		t.Error("a token for a client outside the job was created")
	}
	addr, logs := serveAuth(t, job, tokens, nil)
	conn := dialPlain(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code := func(err error) codes.Code { return status.Code(err) }

	for _, tc := range []struct {
		name, token string
		want        codes.Code
	}{
		{"no token", "", codes.Unauthenticated},
		{"wrong token", "token-zzzz", codes.Unauthenticated},
		{"expired token", expired, codes.Unauthenticated},
		{"revoked token", revoked, codes.PermissionDenied},
	} {
		if _, err := newTestClient(t, conn, job.ID).enroll(ctx, tc.token, 2); code(err) != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	a := newTestClient(t, conn, job.ID)
	if _, err := a.enroll(ctx, "token-aaaa", 2); err != nil {
		t.Fatal(err)
	}
	// The token was used: a second enrolment with it, under another key,
	// is refused and binds nothing.
	thief := newTestClient(t, conn, job.ID)
	if _, err := thief.enroll(ctx, "token-aaaa", 2); code(err) != codes.PermissionDenied {
		t.Errorf("second enrolment with a used token: %v, want PermissionDenied", err)
	}
	thief.id = "a"
	if _, err := thief.api.NextTask(ctx, &tallyv1.NextTaskRequest{WaitMs: 10}); code(err) != codes.Unauthenticated {
		t.Errorf("the thief's key signs as a: %v, want Unauthenticated", err)
	}
	if _, err := a.api.NextTask(ctx, &tallyv1.NextTaskRequest{WaitMs: 10}); err != nil {
		t.Errorf("a's own key after the refused second enrolment: %v", err)
	}
	// A token of the tokens file, created while the coordinator runs.
	fresh, _, err := CreateToken(tokens, job, "c", time.Hour, 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := newTestClient(t, conn, job.ID)
	if r, err := c.enroll(ctx, fresh, 2); err != nil || r.GetClientId() != "c" {
		t.Fatalf("token created while running: %v, client %q", err, r.GetClientId())
	}
	b := newTestClient(t, conn, job.ID)
	if _, err := b.enroll(ctx, "token-bbbb", 2); err != nil {
		t.Fatalf("token given by its hash in the job file: %v", err)
	}
	log := logs.String()
	for _, want := range []string{"unknown enrolment token", "expired at", "credential revoked", "already used", "does not verify"} {
		if !strings.Contains(log, want) {
			t.Errorf("no log line says %q; log:\n%s", want, log)
		}
	}
	st, err := a.api.JobStatus(ctx, &tallyv1.JobStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(st.GetClients()); n != 3 {
		t.Errorf("%d clients joined, want a, b and c only", n)
	}
}

// TestSignedCalls: calls that are unsigned, signed by another key, stale,
// replayed, aimed at another job or method, or from a revoked client are
// refused; Resume brings a restarted client back with its key alone.
func TestSignedCalls(t *testing.T) {
	job := authJob(t)
	tokens := filepath.Join(t.TempDir(), "authjob.tokens")
	addr, logs := serveAuth(t, job, tokens, nil)
	conn := dialPlain(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code := func(err error) codes.Code { return status.Code(err) }
	a := newTestClient(t, conn, job.ID)
	if _, err := a.enroll(ctx, "token-aaaa", 2); err != nil {
		t.Fatal(err)
	}
	raw := tallyv1.NewCoordinatorServiceClient(conn)
	pollReq := &tallyv1.NextTaskRequest{WaitMs: 10}
	poll := func(md metadata.MD) error {
		_, err := raw.NextTask(metadata.NewOutgoingContext(ctx, md), pollReq)
		return err
	}
	signReq := func(job, method string, req any, at time.Time) metadata.MD {
		body, err := auth.BodyDigest(req)
		if err != nil {
			t.Fatal(err)
		}
		md, err := auth.SignBody(a.key, job, "a", method, body, at)
		if err != nil {
			t.Fatal(err)
		}
		return md
	}
	sign := func(job, method string, at time.Time) metadata.MD { return signReq(job, method, pollReq, at) }
	next := tallyv1.CoordinatorService_NextTask_FullMethodName
	md := sign(job.ID, next, time.Now())
	if err := poll(md); err != nil {
		t.Fatalf("a signed call: %v", err)
	}
	for _, tc := range []struct {
		name string
		md   metadata.MD
	}{
		{"unsigned", nil},
		{"replayed", md},
		{"stale", sign(job.ID, next, time.Now().Add(-auth.DefaultSkew-time.Minute))},
		{"from the future", sign(job.ID, next, time.Now().Add(auth.DefaultSkew+time.Minute))},
		{"signed for another job", sign("other-job", next, time.Now())},
		{"signed for another method", sign(job.ID, tallyv1.CoordinatorService_Receipts_FullMethodName, time.Now())},
		// The signature covers the request: one signed for another body
		// (a relay that rewrites what the client asked) is refused.
		{"signed for another request", signReq(job.ID, next, &tallyv1.NextTaskRequest{WaitMs: 10, ReceiptsAfter: 7}, time.Now())},
		{"signed without the request", func() metadata.MD {
			md, err := auth.Sign(a.key, job.ID, "a", next, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			return md
		}()},
		{"malformed", metadata.Pairs(auth.MDClient, "a", auth.MDTime, "soon", auth.MDNonce, "00", auth.MDSig, "x")},
	} {
		if err := poll(tc.md); code(err) != codes.Unauthenticated {
			t.Errorf("%s call: %v, want Unauthenticated", tc.name, err)
		}
	}
	// A stream's signature covers its first message: one signed for a
	// header naming task x and sent with task y is refused, and so is one
	// signed for no first message.
	signedFor := &tallyv1.SubmitUpdateRequest{Header: &tallyv1.SubmitHeader{TaskId: "x", Encoding: "f64le"}}
	up, err := a.api.SubmitUpdate(auth.WithFirstMessage(ctx, signedFor))
	if err != nil {
		t.Fatal(err)
	}
	up.Send(&tallyv1.SubmitUpdateRequest{Header: &tallyv1.SubmitHeader{TaskId: "y", Encoding: "f64le"}})
	if _, err := up.CloseAndRecv(); code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "first message is not the one its signature covers") {
		t.Errorf("a stream whose first message is not the signed one: %v, want Unauthenticated", err)
	}
	up, err = a.api.SubmitUpdate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	up.Send(signedFor)
	if _, err := up.CloseAndRecv(); code(err) != codes.Unauthenticated {
		t.Errorf("a stream signed without its first message: %v, want Unauthenticated", err)
	}
	// A restarted client resumes with its key; unsigned, Resume is refused.
	if _, err := raw.Resume(ctx, &tallyv1.ResumeRequest{Samples: 5, Features: 2}); code(err) != codes.Unauthenticated {
		t.Errorf("unsigned Resume: %v, want Unauthenticated", err)
	}
	if r, err := a.api.Resume(ctx, &tallyv1.ResumeRequest{Samples: 5, Features: 2}); err != nil || r.GetClientId() != "a" || r.GetJob().GetJobId() != job.ID {
		t.Errorf("signed Resume: %v, %v", r, err)
	}
	// Revoking the client turns its key away, on the next call.
	if err := RevokeClient(tokens, job, "a", time.Now()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err = a.api.NextTask(ctx, &tallyv1.NextTaskRequest{WaitMs: 10}); code(err) == codes.PermissionDenied {
			break
		}
		time.Sleep(100 * time.Millisecond) // the tokens file is looked at once a second
	}
	if code(err) != codes.PermissionDenied {
		t.Errorf("call of a revoked client: %v, want PermissionDenied", err)
	}
	log := logs.String()
	for _, want := range []string{"call refused", "nonce was already used", "clock skew", "does not verify", "revoked"} {
		if !strings.Contains(log, want) {
			t.Errorf("no log line says %q; log:\n%s", want, log)
		}
	}
}

// TestEnrolmentsSurviveRestart: a coordinator restarted on its state file
// still knows the keys it bound, and the used token stays used.
func TestEnrolmentsSurviveRestart(t *testing.T) {
	job := authJob(t)
	path := filepath.Join(t.TempDir(), "state.db")
	store, err := OpenBoltStore(path, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	pub := key.Public().(ed25519.PublicKey)
	if err := store.Bind("job:a", 1, Binding{Client: "a", Key: pub, Token: "job:a", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	store.Close()
	store, err = OpenBoltStore(path, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	bs, err := store.Bindings()
	if err != nil || len(bs) != 1 || bs[0].Client != "a" || !bs[0].Key.Equal(pub) {
		t.Fatalf("bindings after reopening: %+v, %v", bs, err)
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	if err := store.Bind("job:a", 1, Binding{Client: "a", Key: other.Public().(ed25519.PublicKey), Token: "job:a"}); !errors.Is(err, ErrTokenUsed) {
		t.Errorf("second use of a one-use token under another key, after reopening: %v, want ErrTokenUsed", err)
	}
	// The same key again is the client retrying an enrolment whose answer
	// it lost: admitted, and the binding is unchanged.
	if err := store.Bind("job:a", 1, Binding{Client: "a", Key: pub, Token: "job:a"}); err != nil {
		t.Errorf("the same key retrying its enrolment: %v", err)
	}
	if bs, _ := store.Bindings(); len(bs) != 1 || !bs[0].Key.Equal(pub) {
		t.Errorf("bindings after the retry: %+v", bs)
	}
}

// TestResumeAfterRestart: a coordinator restarted on its state file admits
// an enrolled client's signed calls only after the client resumes (the
// engine keeps no presence or identity key across a restart), and the
// client resumes with its key alone.
func TestResumeAfterRestart(t *testing.T) {
	job := authJob(t)
	path := filepath.Join(t.TempDir(), "state.db")
	open := func() *BoltStore {
		s, err := OpenBoltStore(path, job.ID)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store := open()
	addr, _, stop := serveAuthStore(t, job, "", nil, store)
	a := newTestClient(t, dialPlain(t, addr), job.ID)
	if _, err := a.enroll(ctx, "token-aaaa", 2); err != nil {
		t.Fatal(err)
	}
	stop()
	store.Close()

	store = open()
	defer store.Close()
	addr, _, _ = serveAuthStore(t, job, "", nil, store)
	a2 := &testClient{key: a.key, job: job.ID, id: "a"}
	a2.api = tallyv1.NewCoordinatorServiceClient(auth.Conn(dialPlain(t, addr), func() (ed25519.PrivateKey, string, string) { return a2.key, a2.job, a2.id }, nil))
	if _, err := a2.api.NextTask(ctx, &tallyv1.NextTaskRequest{WaitMs: 10}); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "Resume") {
		t.Errorf("a call before resuming: %v, want Unauthenticated asking for Resume", err)
	}
	if _, err := newTestClient(t, dialPlain(t, addr), job.ID).enroll(ctx, "token-aaaa", 2); status.Code(err) != codes.PermissionDenied {
		t.Errorf("enrolling another key with the used token after the restart: %v, want PermissionDenied", err)
	}
	if r, err := a2.api.Resume(ctx, &tallyv1.ResumeRequest{Samples: 5, Features: 2}); err != nil || r.GetClientId() != "a" {
		t.Fatalf("Resume after the restart: %v, %v", r, err)
	}
	if _, err := a2.api.NextTask(ctx, &tallyv1.NextTaskRequest{WaitMs: 10}); err != nil {
		t.Errorf("a call after resuming: %v", err)
	}
}

// testPKI is a CA with a server and a client certificate, and another CA's
// client certificate.
type testPKI struct {
	ca, otherCA        *x509.Certificate
	server, client     tls.Certificate
	strangerClientCert tls.Certificate
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	mkCA := func(name string) (*x509.Certificate, *ecdsa.PrivateKey) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return cert, key
	}
	leaf := func(ca *x509.Certificate, caKey *ecdsa.PrivateKey, name string, usage x509.ExtKeyUsage) tls.Certificate {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	ca, caKey := mkCA("tally test CA")
	other, otherKey := mkCA("someone else's CA")
	return testPKI{
		ca: ca, otherCA: other,
		server:             leaf(ca, caKey, "coordinator", x509.ExtKeyUsageServerAuth),
		client:             leaf(ca, caKey, "hospital-a", x509.ExtKeyUsageClientAuth),
		strangerClientCert: leaf(other, otherKey, "stranger", x509.ExtKeyUsageClientAuth),
	}
}

// TestMutualTLS: with a client CA set, a client without a certificate, or
// with one of another CA, cannot connect; one with a certificate of the
// client CA enrols.
func TestMutualTLS(t *testing.T) {
	pki := newTestPKI(t)
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(pki.ca)
	serverCfg := &tls.Config{Certificates: []tls.Certificate{pki.server}, ClientCAs: clientCAs,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
	job := authJob(t)
	addr, _ := serveAuth(t, job, "", serverCfg)
	roots := x509.NewCertPool()
	roots.AddCert(pki.ca)
	dial := func(certs ...tls.Certificate) tallyv1.CoordinatorServiceClient {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: certs, MinVersion: tls.VersionTLS13})))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return tallyv1.NewCoordinatorServiceClient(conn)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := func() *tallyv1.EnrollRequest {
		_, key, _ := ed25519.GenerateKey(rand.Reader)
		return &tallyv1.EnrollRequest{Token: "token-aaaa", Samples: 5, Features: 2, AuthKey: key.Public().(ed25519.PublicKey)}
	}
	for _, tc := range []struct {
		name  string
		certs []tls.Certificate
	}{
		{"no client certificate", nil},
		{"a certificate of another CA", []tls.Certificate{pki.strangerClientCert}},
	} {
		_, err := dial(tc.certs...).Enroll(ctx, req())
		if status.Code(err) != codes.Unavailable {
			t.Errorf("%s: %v, want the connection refused (Unavailable)", tc.name, err)
		}
	}
	// Plaintext cannot talk to a TLS server either.
	if _, err := tallyv1.NewCoordinatorServiceClient(dialPlain(t, addr)).Enroll(ctx, req()); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext client: %v, want Unavailable", err)
	}
	r, err := dial(pki.client).Enroll(ctx, req())
	if err != nil || r.GetClientId() != "a" {
		t.Fatalf("client with a certificate of the client CA: %v, %v", r, err)
	}
}
