package coordinator

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/tallyfl/tally/model"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// TestHealthProbePlaintext asks a TLS coordinator's health service the way
// the kubelet's built-in gRPC probe does: in plaintext, with no
// certificate (Kubernetes' probes take no TLS settings). It gets SERVING
// on the HealthListener, which offers nothing but health; the main
// address still refuses plaintext; and once Run returns the probe port
// is closed.
func TestHealthProbePlaintext(t *testing.T) {
	pki := newTestPKI(t)
	serverCfg := &tls.Config{Certificates: []tls.Certificate{pki.server}, MinVersion: tls.VersionTLS13}
	val := model.Examples{X: []float64{1, 0, 0, 1, 1, 1, 0, 0}, Y: []int{0, 1, 1, 0}, Features: 2}
	listen := func() net.Listener {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return lis
	}
	lis, probeLis := listen(), listen()
	addr, probeAddr := lis.Addr().String(), probeLis.Addr().String()
	srv, err := NewServer(ServerConfig{Job: authJob(t), Validation: val, Linger: time.Second, TLS: serverCfg, HealthListener: probeLis})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := srv.Run(runCtx, lis)
		done <- err
	}()
	defer func() {
		stop()
		<-done
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	hc := healthpb.NewHealthClient(dialPlain(t, probeAddr))
	for _, service := range []string{"", tallyv1.CoordinatorService_ServiceDesc.ServiceName} {
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("plaintext health check %q at %s: %v (code %v), want SERVING", service, probeAddr, err, status.Code(err))
		}
		if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("plaintext health check %q: %v, want SERVING", service, r.GetStatus())
		}
	}
	// The probe port serves health alone: the API is not there in
	// plaintext, and so TLS still guards every call of it.
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	_, err = tallyv1.NewCoordinatorServiceClient(dialPlain(t, probeAddr)).Enroll(ctx,
		&tallyv1.EnrollRequest{Token: "token-aaaa", Samples: 5, Features: 2, AuthKey: key.Public().(ed25519.PublicKey)})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("Enroll on the probe port %s: %v, want Unimplemented", probeAddr, err)
	}
	if _, err := healthpb.NewHealthClient(dialPlain(t, addr)).Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext health check on the TLS address %s: %v, want Unavailable", addr, err)
	}

	stop()
	if err := <-done; err != context.Canceled {
		t.Errorf("Run after cancel: %v, want context.Canceled", err)
	}
	done <- nil // for the deferred stop
	if _, err := net.DialTimeout("tcp", probeAddr, 5*time.Second); err == nil {
		t.Errorf("probe port %s still accepts connections after Run returned", probeAddr)
	}
}
