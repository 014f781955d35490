package client

import (
	"errors"
	"strings"
	"testing"
)

// TestManifestRefusesScalars (attack): a coordinator whose job asks for
// more released scalars per client and round (projection valuation's
// public vectors) than the manifest's L = security.max_scalars_per_client_round
// (here the default, 1) is refused at join with ErrScalars, and gets no
// update.
func TestManifestRefusesScalars(t *testing.T) {
	f := heFake(t, 1)
	fx := newManifestFixture(t, f, f.he.params)
	f.job.ScalarsPerRound = 6
	_, err := runManifestClient(t, f, fx, "")
	if n := len(f.counts().submissions); n != 0 {
		t.Errorf("%d updates sent to a job asking for 6 scalars a round under L = 1, want 0", n)
	}
	if !errors.Is(err, ErrScalars) || !errors.Is(err, ErrManifestSecurity) {
		t.Fatalf("Run: %v, want %v", err, ErrScalars)
	}
	if want := "asks for 6 scalars per client and round, the manifest's security.max_scalars_per_client_round is 1"; !strings.Contains(err.Error(), want) {
		t.Errorf("Run: %v, want it to say %q", err, want)
	}
}
