package manifest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// testKey is a deterministic key for seed byte b.
func testKey(b byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, ed25519.SeedSize))
}

func testManifest(t *testing.T, n int) (*Manifest, ed25519.PrivateKey) {
	t.Helper()
	cert := sha256.Sum256([]byte("cert"))
	m := &Manifest{
		Version: Version, Job: "job-1",
		Schema:      Schema{Features: 4, Classes: []string{"a", "b"}, ModelKind: "logreg"},
		Security:    Security{SecureAggregation: "he", HEParams: "0011223344556677", MinLogN: 14, MinLogNoiseFlooding: 30, MinGroupSize: 3},
		Committee:   Committee{Size: 3, Threshold: 2, Rule: RuleSHA256Rank, Seed: bytes.Repeat([]byte{7}, 32)},
		Coordinator: Coordinator{ReceiptKey: HexBytes(testKey(200).Public().(ed25519.PublicKey)), TLSCertSHA256: cert[:]},
	}
	for i := range n {
		m.Participants = append(m.Participants, Participant{ID: fmt.Sprintf("client-%d", i), Key: HexBytes(testKey(byte(i + 1)).Public().(ed25519.PublicKey))})
	}
	owner := testKey(100)
	if err := m.Sign(owner); err != nil {
		t.Fatal(err)
	}
	return m, owner
}

// TestRoundTrip: a signed manifest survives its file form, with the same
// fingerprint, and its participants' keys are found by id.
func TestRoundTrip(t *testing.T) {
	m, _ := testManifest(t, 5)
	path := filepath.Join(t.TempDir(), "job.manifest.json")
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.FingerprintHex() != m.FingerprintHex() {
		t.Fatalf("fingerprint %s after the round trip, %s before", got.FingerprintHex(), m.FingerprintHex())
	}
	if err := got.CheckFingerprint(strings.ToUpper(m.FingerprintHex())); err != nil {
		t.Fatal(err)
	}
	if k, ok := got.IdentityKey("client-3"); !ok || !k.Equal(testKey(4).Public()) {
		t.Fatalf("IdentityKey(client-3) = %x, %v", k, ok)
	}
	if _, ok := got.IdentityKey("client-9"); ok {
		t.Fatal("IdentityKey found a participant the manifest does not list")
	}
}

// TestTamperedManifestRefused: any change after signing is refused, by
// the signature or by the pin, and a re-signed manifest has another
// fingerprint.
func TestTamperedManifestRefused(t *testing.T) {
	m, _ := testManifest(t, 5)
	pin := m.FingerprintHex()
	path := filepath.Join(t.TempDir(), "m.json")
	b, _ := m.Marshal()
	for name, edit := range map[string]func(string) string{
		"min_group_size": func(s string) string { return strings.Replace(s, `"min_group_size": 3`, `"min_group_size": 2`, 1) },
		"participant":    func(s string) string { return strings.Replace(s, `"client-4"`, `"mallory"`, 1) },
		"threshold":      func(s string) string { return strings.Replace(s, `"threshold": 2`, `"threshold": 3`, 1) },
	} {
		t.Run(name, func(t *testing.T) {
			e := edit(string(b))
			if e == string(b) {
				t.Fatal("the edit changed nothing")
			}
			os.WriteFile(path, []byte(e), 0o644)
			_, err := Load(path)
			if !errors.Is(err, ErrSignature) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Load of an edited manifest: %v, want %v naming %s", err, ErrSignature, path)
			}
		})
	}
	m.Security.MinGroupSize = 2
	if err := m.Sign(testKey(99)); err != nil {
		t.Fatal(err)
	}
	if err := m.CheckFingerprint(pin); !errors.Is(err, ErrFingerprint) {
		t.Fatalf("a manifest re-signed by another owner passed the pin: %v", err)
	}
}

// TestValidateNamesFields: every bad field is named at once.
func TestValidateNamesFields(t *testing.T) {
	m, owner := testManifest(t, 5)
	m.Committee.Threshold = 1
	m.Security.SecureAggregation = "none"
	m.Participants[1].ID = "client-0"
	err := m.Sign(owner)
	for _, want := range []string{"committee.threshold: is 1, want a majority", `security.secure_aggregation: is "none"`, `participants[1].id: "client-0" is listed twice`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Sign: %v, want it to say %q", err, want)
		}
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("Sign: %v, want %v", err, ErrInvalid)
	}
}

// TestCommitteeRule: DrawCommittee's committee passes CheckCommittee with
// nobody absent; a substituted member, one not in the manifest, or a
// wrong size or threshold is refused; a committee that skips low scorers
// passes but names them absent.
func TestCommitteeRule(t *testing.T) {
	m, _ := testManifest(t, 8)
	var ids []string
	for _, p := range m.Participants {
		ids = append(ids, p.ID)
	}
	drawn := DrawCommittee(m.Committee.Seed, 4, ids, 3)
	if len(drawn) != 3 {
		t.Fatalf("drew %v", drawn)
	}
	if absent, err := m.CheckCommittee(4, drawn, 2); err != nil || len(absent) != 0 {
		t.Fatalf("the rule's own committee: absent %v, %v", absent, err)
	}
	if other := DrawCommittee(m.Committee.Seed, 5, ids, 3); fmt.Sprint(other) == fmt.Sprint(drawn) {
		t.Logf("epochs 4 and 5 drew the same committee %v (possible, unlikely)", drawn)
	}
	if _, err := m.CheckCommittee(4, []string{drawn[0], drawn[1], "mallory"}, 2); !errors.Is(err, ErrCommittee) || !strings.Contains(err.Error(), `"mallory" is not a participant`) {
		t.Fatalf("member outside the manifest: %v", err)
	}
	if _, err := m.CheckCommittee(4, drawn[:1], 2); !errors.Is(err, ErrCommittee) {
		t.Fatalf("committee below the threshold: %v", err)
	}
	if _, err := m.CheckCommittee(4, append(slices.Clone(drawn), "client-7"), 2); !errors.Is(err, ErrCommittee) {
		t.Fatalf("committee above the manifest's size: %v", err)
	}
	if _, err := m.CheckCommittee(4, drawn, 3); !errors.Is(err, ErrCommittee) {
		t.Fatalf("wrong threshold: %v", err)
	}
	rest := []string{}
	for _, id := range ids {
		if id != drawn[0] {
			rest = append(rest, id)
		}
	}
	skip := DrawCommittee(m.Committee.Seed, 4, rest, 3)
	absent, err := m.CheckCommittee(4, skip, 2)
	if err != nil || len(absent) != 1 || absent[0] != drawn[0] {
		t.Fatalf("committee without %s: absent %v, %v; want exactly it absent", drawn[0], absent, err)
	}
}

// TestMaxScalarsPerClientRound: the optional L leaves the encoding of a
// manifest without it as it was (its fingerprint unchanged), is covered by
// the signature when set, and is refused when negative.
func TestMaxScalarsPerClientRound(t *testing.T) {
	m, owner := testManifest(t, 3)
	before := m.Canonical()
	m.Security.MaxScalarsPerClientRound = 0
	if !bytes.Equal(m.Canonical(), before) {
		t.Fatal("an unset max_scalars_per_client_round changed the encoding")
	}
	m.Security.MaxScalarsPerClientRound = 2
	if bytes.Equal(m.Canonical(), before) || !bytes.HasPrefix(m.Canonical(), before) {
		t.Fatal("max_scalars_per_client_round = 2 is not appended to the encoding")
	}
	if err := m.Sign(owner); err != nil {
		t.Fatal(err)
	}
	m.Security.MaxScalarsPerClientRound = -1
	if err := m.Validate(); err == nil || !strings.Contains(err.Error(), "security.max_scalars_per_client_round") {
		t.Fatalf("a negative L: err = %v", err)
	}
}

// TestManifestBeforeEdgesVerifies: a manifest that `tally data` signed
// before manifests could list edges (testdata, with its L set) still
// verifies, with the fingerprint tally data printed for it then.
func TestManifestBeforeEdgesVerifies(t *testing.T) {
	m, err := Load(filepath.Join("testdata", "v1-before-edges.manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Edges) != 0 || m.Security.MaxScalarsPerClientRound == 0 {
		t.Fatalf("the fixture has %d edges and L %d; want none and L set", len(m.Edges), m.Security.MaxScalarsPerClientRound)
	}
	if err := m.CheckFingerprint("1c450b66138d40b41179af5581cd35f3e07e716d53e8f969abc4996d3978802b"); err != nil {
		t.Fatal(err)
	}
	if pins := m.TLSPins(); len(pins) != 1 || !bytes.Equal(pins[0], m.Coordinator.TLSCertSHA256) {
		t.Fatalf("TLSPins = %x, want the coordinator's alone", pins)
	}
}

// TestEdges: listed edges are covered by the signature, in any order, and
// their pins are what a client accepts besides the coordinator's; an
// encoding with edges differs from any without them.
func TestEdges(t *testing.T) {
	m, owner := testManifest(t, 3)
	before := m.Canonical()
	pin := func(s string) HexBytes { p := sha256.Sum256([]byte(s)); return p[:] }
	m.Edges = []Edge{{ID: "edge-1", TLSCertSHA256: pin("edge-1")}, {ID: "edge-0", TLSCertSHA256: pin("edge-0")}}
	if !bytes.HasPrefix(m.Canonical(), before) || len(m.Canonical()) <= len(before)+8 {
		t.Fatal("the edges are not appended to the encoding after L")
	}
	if err := m.Sign(owner); err != nil {
		t.Fatal(err)
	}
	signed := m.Canonical()
	m.Edges[0], m.Edges[1] = m.Edges[1], m.Edges[0]
	if !bytes.Equal(m.Canonical(), signed) {
		t.Fatal("the order of the edges changed the encoding")
	}
	if err := m.Verify(); err != nil {
		t.Fatal(err)
	}
	// An edge with L set, and L set alone, encode apart.
	l := *m
	l.Edges, l.Security.MaxScalarsPerClientRound = nil, 2
	if bytes.Equal(l.Canonical(), m.Canonical()) {
		t.Fatal("L alone and edges encode alike")
	}
	if p, ok := m.EdgePin("edge-1"); !ok || !bytes.Equal(p, pin("edge-1")) {
		t.Fatalf("EdgePin(edge-1) = %x, %v", p, ok)
	}
	if _, ok := m.EdgePin("edge-9"); ok {
		t.Fatal("EdgePin found an edge the manifest does not list")
	}
	if got := m.TLSPins(); len(got) != 3 || !bytes.Equal(got[0], m.Coordinator.TLSCertSHA256) {
		t.Fatalf("TLSPins = %x, want the coordinator's then both edges'", got)
	}
	b, _ := m.Marshal()
	if !strings.Contains(string(b), `"edges"`) {
		t.Fatalf("the file form lists no edges:\n%s", b)
	}
	tampered := strings.Replace(string(b), fmt.Sprintf("%x", pin("edge-1")), fmt.Sprintf("%x", pin("mallory")), 1)
	if tampered == string(b) {
		t.Fatal("the edit changed nothing")
	}
	if _, err := Parse([]byte(tampered), "m.json"); !errors.Is(err, ErrSignature) {
		t.Fatalf("a manifest whose edge pin was swapped after signing: %v, want %v", err, ErrSignature)
	}
	if b, _ := (&Manifest{}).Marshal(); strings.Contains(string(b), "edges") {
		t.Fatalf("a manifest without edges writes them:\n%s", b)
	}
}

// TestEdgesValidate: a short pin, a twice-listed id, and a pin that is
// another edge's or the coordinator's are refused, each naming its field.
func TestEdgesValidate(t *testing.T) {
	m, owner := testManifest(t, 3)
	p := sha256.Sum256([]byte("edge"))
	m.Edges = []Edge{
		{ID: "edge-0", TLSCertSHA256: p[:]},
		{ID: "edge-1", TLSCertSHA256: p[:5]},
		{ID: "edge-0", TLSCertSHA256: slices.Concat(p[:31], []byte{1})},
		{ID: "edge-3", TLSCertSHA256: p[:]},
		{ID: "edge-4", TLSCertSHA256: m.Coordinator.TLSCertSHA256},
		{ID: "", TLSCertSHA256: slices.Concat(p[:31], []byte{2})},
	}
	err := m.Sign(owner)
	for _, want := range []string{
		"edges[1].tls_cert_sha256: has 5 bytes, want a SHA-256 (32)",
		`edges[2].id: "edge-0" is listed twice`,
		`edges[3].tls_cert_sha256: edge "edge-3" pins the certificate of edge "edge-0"`,
		`edges[4].tls_cert_sha256: edge "edge-4" pins the certificate of the coordinator`,
		"edges[5].id: must have 1 to 128 bytes",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Sign: %v, want it to say %q", err, want)
		}
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("Sign: %v, want %v", err, ErrInvalid)
	}
}
