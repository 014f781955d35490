package engine

import (
	"fmt"
	"testing"
)

// TestDefaultValuationModeBySize: under he the default mode is projection,
// whose coalition game holds at most sampledBound players; a job with more
// clients a round keeps influence mode (with projection and the influence
// method its default configuration failed its own validation).
func TestDefaultValuationModeBySize(t *testing.T) {
	for _, tc := range []struct {
		clients      int
		secure       string
		mode, method string
	}{
		{8, "he", ModeProjection, "exact-shapley"},
		{40, "he", ModeProjection, "monte-carlo"},
		{sampledBound + 1, "he", ModeInfluence, MethodInfluence},
		{1000, "he", ModeInfluence, MethodInfluence},
		{8, "none", ModePlain, "exact-shapley"},
	} {
		j := JobConfig{SecureAggregation: tc.secure, Data: DataConfig{Features: 4, Classes: 2}}
		for i := range tc.clients {
			j.Clients.Enrolment = append(j.Clients.Enrolment, EnrolmentConfig{ID: fmt.Sprintf("c%d", i)})
		}
		j.valuationDefaults()
		if j.Valuation.Mode != tc.mode || j.Valuation.Method != tc.method {
			t.Errorf("%d clients, %s: mode %q method %q, want %q %q", tc.clients, tc.secure, j.Valuation.Mode, j.Valuation.Method, tc.mode, tc.method)
		}
		var errs []string
		j.validateValuation(func(field, format string, args ...any) {
			errs = append(errs, field+": "+fmt.Sprintf(format, args...))
		})
		if len(errs) > 0 {
			t.Errorf("%d clients, %s: the defaults fail validation: %v", tc.clients, tc.secure, errs)
		}
	}
}
