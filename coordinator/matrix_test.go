package coordinator

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/valuation"
)

// runSmallJob runs the small job (harness_test.go) with its state and
// receipts in a bbolt file.
func runSmallJob(t *testing.T, secure, mode, method string) (Outcome, *BoltStore) {
	t.Helper()
	job, fed, store := smallJob(t, "matrix", secure, mode, method)
	srv, err := NewServer(ServerConfig{Job: job, Validation: fed.Validation, Linger: 2 * time.Second, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	return serveFederation(t, srv, job, fed.Clients, 200*time.Millisecond, nil), store
}

// TestEveryModeAndMethod runs every valuation mode × method combination
// the job file accepts, in the clear and under encryption, on a small job:
// each round is valued for every contributor, the receipts verify, and
// every decryption respects docs/DESIGN.md §3.
func TestEveryModeAndMethod(t *testing.T) {
	methods := append(valuation.Methods(), engine.MethodCGSV, engine.MethodInfluence)
	for _, secure := range []string{"none", "he"} {
		t.Run("secure="+secure+"/mode=off", func(t *testing.T) {
			out, store := runSmallJob(t, secure, engine.ModeOff, "")
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
		for _, mode := range []string{engine.ModePlain, engine.ModeGroups, engine.ModeInfluence} {
			for _, method := range methods {
				cfg := engine.JobConfig{SecureAggregation: secure, Valuation: engine.ValuationConfig{Mode: mode, Method: method}}
				cfg.Clients.Enrolment = make([]engine.EnrolmentConfig, 5)
				// The job file's validation decides; only its valuation
				// fields count, the rest of this config is left empty.
				_, err := engine.NewJob(cfg, ".")
				refused := err != nil && strings.Contains(err.Error(), "valuation.")
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
						if err := engine.CheckDecryptions(3, out.History); err != nil {
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
