package coordinator

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tallyfl/tally/client"
	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/valuation"
)

// runSmallJob runs a 2-round breast-cancer job with 5 in-process clients
// over loopback gRPC, its state and receipts in a bbolt file.
func runSmallJob(t *testing.T, secure, mode, method string) (Outcome, *BoltStore) {
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
	cfg := JobConfig{
		ID: "matrix", Seed: 9, Rounds: 2,
		Data:         DataConfig{Features: ds.Examples.Features, Classes: 2},
		RoundTimeout: Duration(20 * time.Second), Tick: Duration(20 * time.Millisecond),
		Clients:           ClientsConfig{Min: 3, WaitFor: n},
		Scaling:           ScalingConfig{Mode: "federated"},
		SecureAggregation: secure,
		Committee:         CommitteeConfig{Size: 3, Threshold: 2},
		HEParams:          insecureHE(),
		Valuation:         ValuationConfig{Mode: mode, Method: method, Estimator: valuation.Config{Samples: 20}},
		Payment:           PaymentConfig{BudgetPerRound: 10, BaselineShare: 0.1},
	}
	for i := range n {
		cfg.Clients.Enrolment = append(cfg.Clients.Enrolment, EnrolmentConfig{ID: fmt.Sprintf("c%d", i), Token: fmt.Sprintf("token-%d-matrix", i)})
	}
	job, err := NewJob(cfg, ".")
	if err != nil {
		t.Fatal(err)
	}
	store, err := OpenBoltStore(filepath.Join(t.TempDir(), "state.db"), job.ID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	srv, err := NewServer(ServerConfig{Job: job, Validation: fed.Validation, Linger: 2 * time.Second, Store: store})
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
	var wg sync.WaitGroup
	for i := range n {
		c, err := client.New(client.Config{Conn: conn, Token: job.Clients.Enrolment[i].Token, Data: fed.Clients[i], PollWait: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Run(ctx); err != nil {
				t.Errorf("client %d: %v", i, err)
			}
		}()
	}
	out, err := srv.Run(ctx, lis)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	return out, store
}

// TestEveryModeAndMethod runs every valuation mode × method combination
// the job file accepts, in the clear and under encryption, on a small job:
// each round is valued for every contributor, the receipts verify, and
// every decryption respects DESIGN §3.
func TestEveryModeAndMethod(t *testing.T) {
	methods := append(valuation.Methods(), MethodCGSV, MethodInfluence)
	for _, secure := range []string{"none", "he"} {
		t.Run("secure="+secure+"/mode=off", func(t *testing.T) {
			out, store := runSmallJob(t, secure, ModeOff, "")
			if out.Done == nil || out.Done.FinalRound != 2 {
				t.Fatalf("job ended %+v", out.Done)
			}
			for _, r := range out.History {
				if r.Valuation != nil {
					t.Errorf("round %d valued with valuation off", r.Round)
				}
			}
			if has, err := store.DB().HasReceiptsForRound("matrix", 2); err != nil || has {
				t.Errorf("receipts with valuation off (%v)", err)
			}
		})
		for _, mode := range []string{ModePlain, ModeGroups, ModeInfluence} {
			for _, method := range methods {
				cfg := JobConfig{SecureAggregation: secure, Valuation: ValuationConfig{Mode: mode, Method: method}}
				cfg.Clients.Enrolment = make([]EnrolmentConfig, 5)
				cfg.valuationDefaults()
				var refused bool
				cfg.validateValuation(func(string, string, ...any) { refused = true })
				name := fmt.Sprintf("secure=%s/mode=%s/method=%s", secure, mode, method)
				if refused {
					// The job file refuses it: plain under he, cgsv under influence.
					continue
				}
				t.Run(name, func(t *testing.T) {
					out, store := runSmallJob(t, secure, mode, method)
					if out.Done == nil || out.Done.FinalRound != 2 {
						t.Fatalf("job ended %+v", out.Done)
					}
					for _, r := range out.History {
						if r.Failed {
							continue
						}
						rv := r.Valuation
						if rv == nil || rv.Error != "" {
							t.Fatalf("round %d valuation: %+v", r.Round, rv)
						}
						for _, id := range r.Contributors {
							if _, ok := rv.Values[id]; !ok {
								t.Errorf("round %d: no value for %s", r.Round, id)
							}
						}
					}
					if secure == "he" {
						if err := CheckDecryptions(3, out.History); err != nil {
							t.Error(err)
						}
					}
					if err := store.DB().Verify(); err != nil {
						t.Error(err)
					}
					if has, err := store.DB().HasReceiptsForRound("matrix", 2); err != nil || !has {
						t.Errorf("no receipts for round 2 (%v)", err)
					}
				})
			}
		}
	}
}
