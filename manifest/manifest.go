package manifest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Version is the manifest format this package reads and writes.
const Version = 1

// canonicalTag separates manifest signatures from anything else an owner
// key might sign; a new encoding must change it.
const canonicalTag = "tally manifest v1"

// RuleSHA256Rank is the committee rule of DrawCommittee.
const RuleSHA256Rank = "sha256-rank-v1"

// Errors of the package.
var (
	// ErrInvalid: a field is missing or out of range.
	ErrInvalid = errors.New("manifest: invalid manifest")
	// ErrSignature: the owner's signature does not verify.
	ErrSignature = errors.New("manifest: the owner's signature does not verify")
	// ErrFingerprint: the manifest is not the one pinned.
	ErrFingerprint = errors.New("manifest: fingerprint does not match the pinned one")
)

// Manifest is a job's signed trust anchor; see the package documentation
// for what each field means. Fill it, then Sign it.
type Manifest struct {
	Version      int           `json:"version"`
	Job          string        `json:"job"`
	Schema       Schema        `json:"schema"`
	Security     Security      `json:"security"`
	Committee    Committee     `json:"committee"`
	Coordinator  Coordinator   `json:"coordinator"`
	Participants []Participant `json:"participants"`
	// Edges pins the edge aggregators that show clients a TLS certificate
	// of their own. Optional: an edge not listed must show the
	// coordinator's certificate.
	Edges []Edge `json:"edges,omitempty"`
	// Owner is the job owner's Ed25519 public key; Signature its signature
	// of Canonical().
	Owner     HexBytes `json:"owner"`
	Signature HexBytes `json:"signature"`
}

// Schema is the task: the data every client must match and the model.
type Schema struct {
	Features   int      `json:"features"`
	Classes    []string `json:"classes"`
	ModelKind  string   `json:"model_kind"`
	Hidden     []int    `json:"hidden,omitempty"`
	Activation string   `json:"activation,omitempty"`
}

// Security is the floor a client holds the coordinator to.
type Security struct {
	// SecureAggregation is "he": updates are encrypted under the
	// committee's key. A manifest cannot allow updates in the clear.
	SecureAggregation string `json:"secure_aggregation"`
	// HEParams is the hex aggregation.Parameters.ID of the job's CKKS
	// parameter set.
	HEParams            string `json:"he_params"`
	MinLogN             int    `json:"min_log_n"`
	MinLogNoiseFlooding int    `json:"min_log_noise_flooding"`
	// MinGroupSize is k: no aggregate of fewer than k updates is decrypted.
	MinGroupSize int `json:"min_group_size"`
	// MaxScalarsPerClientRound is L: committee members release at most L
	// influence scalars per client and round, over the job's whole
	// decryption transcript. Optional; 0 means 1.
	MaxScalarsPerClientRound int `json:"max_scalars_per_client_round,omitempty"`
}

// Committee is how the decryption committee is drawn.
type Committee struct {
	Size      int      `json:"size"`
	Threshold int      `json:"threshold"`
	Rule      string   `json:"rule"`
	Seed      HexBytes `json:"seed"`
}

// Coordinator pins the coordinator.
type Coordinator struct {
	ReceiptKey HexBytes `json:"receipt_key"`
	// TLSCertSHA256 is the SHA-256 of the coordinator's TLS certificate (DER).
	TLSCertSHA256 HexBytes `json:"tls_cert_sha256"`
}

// Participant is a data holder: its id and its Ed25519 identity key.
type Participant struct {
	ID  string   `json:"id"`
	Key HexBytes `json:"key"`
}

// Edge pins an edge aggregator's own TLS certificate: its id (as the
// job's edges list names it) and the SHA-256 of its certificate (DER),
// which a client accepts as it accepts the coordinator's.
type Edge struct {
	ID            string   `json:"id"`
	TLSCertSHA256 HexBytes `json:"tls_cert_sha256"`
}

// HexBytes is a byte string written as hex in JSON.
type HexBytes []byte

// MarshalJSON writes b as a hex string.
func (b HexBytes) MarshalJSON() ([]byte, error) { return json.Marshal(hex.EncodeToString(b)) }

// UnmarshalJSON reads a hex string.
func (b *HexBytes) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("want a hex string: %w", err)
	}
	v, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("want a hex string: %w", err)
	}
	*b = v
	return nil
}

// maxID bounds ids, as the coordinator does for client ids.
const maxID = 128

// Validate returns every problem of m's content at once, each naming its
// field and wrapping ErrInvalid. It does not check the signature.
func (m *Manifest) Validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: "+format, append([]any{ErrInvalid, field}, a...)...))
	}
	if m.Version != Version {
		bad("version", "is %d, this tally reads version %d", m.Version, Version)
	}
	if m.Job == "" || len(m.Job) > maxID {
		bad("job", "must have 1 to %d bytes", maxID)
	}
	if m.Schema.Features < 1 {
		bad("schema.features", "must be ≥ 1, got %d", m.Schema.Features)
	}
	if len(m.Schema.Classes) < 2 {
		bad("schema.classes", "names %d classes, want at least 2", len(m.Schema.Classes))
	}
	if m.Schema.ModelKind == "" {
		bad("schema.model_kind", "is empty")
	}
	s := m.Security
	if s.SecureAggregation != "he" {
		bad("security.secure_aggregation", "is %q; a manifest requires \"he\"", s.SecureAggregation)
	}
	if b, err := hex.DecodeString(s.HEParams); err != nil || len(b) != 8 {
		bad("security.he_params", "want the 16-hex-digit id of a CKKS parameter set, got %q", s.HEParams)
	}
	if s.MinLogN < 1 {
		bad("security.min_log_n", "must be ≥ 1, got %d", s.MinLogN)
	}
	if s.MinLogNoiseFlooding < 1 {
		bad("security.min_log_noise_flooding", "must be ≥ 1, got %d", s.MinLogNoiseFlooding)
	}
	if s.MinGroupSize < 2 {
		bad("security.min_group_size", "must be ≥ 2, got %d", s.MinGroupSize)
	}
	if s.MaxScalarsPerClientRound < 0 {
		bad("security.max_scalars_per_client_round", "must be ≥ 0 (0 means 1), got %d", s.MaxScalarsPerClientRound)
	}
	c := m.Committee
	if c.Size < 2 {
		bad("committee.size", "must be ≥ 2, got %d", c.Size)
	}
	if 2*c.Threshold <= c.Size || c.Threshold > c.Size {
		bad("committee.threshold", "is %d, want a majority of the committee of %d (size/2 < t ≤ size)", c.Threshold, c.Size)
	}
	if c.Rule != RuleSHA256Rank {
		bad("committee.rule", "is %q, want %q", c.Rule, RuleSHA256Rank)
	}
	if len(c.Seed) != 32 {
		bad("committee.seed", "has %d bytes, want 32", len(c.Seed))
	}
	if len(m.Coordinator.ReceiptKey) != ed25519.PublicKeySize {
		bad("coordinator.receipt_key", "has %d bytes, want an Ed25519 public key (%d)", len(m.Coordinator.ReceiptKey), ed25519.PublicKeySize)
	}
	if len(m.Coordinator.TLSCertSHA256) != sha256.Size {
		bad("coordinator.tls_cert_sha256", "has %d bytes, want a SHA-256 (%d)", len(m.Coordinator.TLSCertSHA256), sha256.Size)
	}
	if len(m.Participants) < c.Size {
		bad("participants", "lists %d, fewer than the committee size %d", len(m.Participants), c.Size)
	}
	// listedID checks the id of a list entry: its length, and that the
	// list has it once.
	listedID := func(field, id string, seen map[string]bool) {
		if id == "" || len(id) > maxID {
			bad(field, "must have 1 to %d bytes", maxID)
		}
		if seen[id] {
			bad(field, "%q is listed twice", id)
		}
		seen[id] = true
	}
	seen := map[string]bool{}
	keys := map[string]string{}
	for i, p := range m.Participants {
		field := fmt.Sprintf("participants[%d]", i)
		listedID(field+".id", p.ID, seen)
		if len(p.Key) != ed25519.PublicKeySize {
			bad(field+".key", "participant %q: has %d bytes, want an Ed25519 public key (%d)", p.ID, len(p.Key), ed25519.PublicKeySize)
		} else if other, ok := keys[string(p.Key)]; ok {
			bad(field+".key", "participant %q has the key of %q: one key is one identity", p.ID, other)
		}
		keys[string(p.Key)] = p.ID
	}
	edges := map[string]bool{}
	pins := map[string]string{string(m.Coordinator.TLSCertSHA256): "the coordinator"}
	for i, e := range m.Edges {
		field := fmt.Sprintf("edges[%d]", i)
		listedID(field+".id", e.ID, edges)
		if len(e.TLSCertSHA256) != sha256.Size {
			bad(field+".tls_cert_sha256", "has %d bytes, want a SHA-256 (%d)", len(e.TLSCertSHA256), sha256.Size)
		} else if other, ok := pins[string(e.TLSCertSHA256)]; ok {
			bad(field+".tls_cert_sha256", "edge %q pins the certificate of %s: each edge shows a certificate of its own (an edge showing the coordinator's is not listed)", e.ID, other)
		}
		pins[string(e.TLSCertSHA256)] = fmt.Sprintf("edge %q", e.ID)
	}
	if len(m.Owner) != ed25519.PublicKeySize {
		bad("owner", "has %d bytes, want an Ed25519 public key (%d)", len(m.Owner), ed25519.PublicKeySize)
	}
	return errors.Join(errs...)
}

// Canonical is the deterministic encoding the owner signs: every field but
// Signature, in the order of the package documentation.
func (m *Manifest) Canonical() []byte {
	var b []byte
	str := func(s []byte) {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	num := func(v int) { b = binary.BigEndian.AppendUint64(b, uint64(int64(v))) }
	str([]byte(canonicalTag))
	num(m.Version)
	str([]byte(m.Job))
	num(m.Schema.Features)
	num(len(m.Schema.Classes))
	for _, c := range m.Schema.Classes {
		str([]byte(c))
	}
	str([]byte(m.Schema.ModelKind))
	num(len(m.Schema.Hidden))
	for _, h := range m.Schema.Hidden {
		num(h)
	}
	str([]byte(m.Schema.Activation))
	str([]byte(m.Security.SecureAggregation))
	str([]byte(m.Security.HEParams))
	num(m.Security.MinLogN)
	num(m.Security.MinLogNoiseFlooding)
	num(m.Security.MinGroupSize)
	num(m.Committee.Size)
	num(m.Committee.Threshold)
	str([]byte(m.Committee.Rule))
	str(m.Committee.Seed)
	str(m.Coordinator.ReceiptKey)
	str(m.Coordinator.TLSCertSHA256)
	// byID writes a list of (id, bytes) entries: its count, then the
	// entries sorted by id.
	byID := func(n int, entry func(i int) (string, []byte)) {
		type kv struct {
			id string
			v  []byte
		}
		es := make([]kv, n)
		for i := range es {
			es[i].id, es[i].v = entry(i)
		}
		sort.Slice(es, func(i, j int) bool { return es[i].id < es[j].id })
		num(n)
		for _, e := range es {
			str([]byte(e.id))
			str(e.v)
		}
	}
	byID(len(m.Participants), func(i int) (string, []byte) { return m.Participants[i].ID, m.Participants[i].Key })
	str(m.Owner)
	// Added after manifests were signed without it: written only when
	// set, so that those still verify; the encoding is then longer, so it
	// stays injective.
	//
	// Edges came later still, on the same terms: with edges the tail is L
	// (written even when 0), then the edges sorted by id. The tail is
	// empty, 8 bytes (L alone) or longer (L and edges), so its length
	// says which.
	if m.Security.MaxScalarsPerClientRound != 0 || len(m.Edges) > 0 {
		num(m.Security.MaxScalarsPerClientRound)
	}
	if len(m.Edges) > 0 {
		byID(len(m.Edges), func(i int) (string, []byte) { return m.Edges[i].ID, m.Edges[i].TLSCertSHA256 })
	}
	return b
}

// Sign validates m, sets its owner to key's public half and signs it.
func (m *Manifest) Sign(key ed25519.PrivateKey) error {
	m.Owner = HexBytes(key.Public().(ed25519.PublicKey))
	if err := m.Validate(); err != nil {
		return err
	}
	m.Signature = ed25519.Sign(key, m.Canonical())
	return nil
}

// Verify validates m and checks the owner's signature.
func (m *Manifest) Verify() error {
	if err := m.Validate(); err != nil {
		return err
	}
	if len(m.Signature) != ed25519.SignatureSize || !ed25519.Verify(ed25519.PublicKey(m.Owner), m.Canonical(), m.Signature) {
		return ErrSignature
	}
	return nil
}

// Fingerprint is SHA-256 of the signed form: Canonical followed by the
// length-prefixed signature.
func (m *Manifest) Fingerprint() [32]byte {
	b := m.Canonical()
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.Signature)))
	b = append(b, m.Signature...)
	return sha256.Sum256(b)
}

// FingerprintHex is Fingerprint in hex, as `tally manifest show` prints it.
func (m *Manifest) FingerprintHex() string {
	f := m.Fingerprint()
	return hex.EncodeToString(f[:])
}

// CheckFingerprint reports ErrFingerprint unless m's fingerprint is want
// (hex, case-insensitive).
func (m *Manifest) CheckFingerprint(want string) error {
	got := m.FingerprintHex()
	if !strings.EqualFold(strings.TrimSpace(want), got) {
		return fmt.Errorf("%w: manifest of job %q has %s, pinned %s", ErrFingerprint, m.Job, got, want)
	}
	return nil
}

// LogFlooding is the flooding floor a parameter set meets: ⌊log2 σ⌋ of
// its decryption-share noise (aggregation.Parameters.NoiseFloodingSigma),
// whatever that σ is derived from.
func LogFlooding(sigma float64) int {
	if sigma < 1 {
		return 0
	}
	return int(math.Floor(math.Log2(sigma)))
}

// IdentityKey returns the identity key the manifest lists for id.
func (m *Manifest) IdentityKey(id string) (ed25519.PublicKey, bool) {
	for _, p := range m.Participants {
		if p.ID == id {
			return ed25519.PublicKey(p.Key), true
		}
	}
	return nil, false
}

// TLSPins are the certificates (SHA-256 of the DER) a client accepts from
// whatever it joins: the coordinator's, then each listed edge's.
func (m *Manifest) TLSPins() [][]byte {
	pins := [][]byte{m.Coordinator.TLSCertSHA256}
	for _, e := range m.Edges {
		pins = append(pins, e.TLSCertSHA256)
	}
	return pins
}

// EdgePin returns the certificate pin the manifest lists for edge id.
func (m *Manifest) EdgePin(id string) ([]byte, bool) {
	for _, e := range m.Edges {
		if e.ID == id {
			return e.TLSCertSHA256, true
		}
	}
	return nil, false
}

// Marshal is the file form: indented JSON.
func (m *Manifest) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Parse reads a manifest from JSON and verifies it; name (a file name)
// prefixes every error. Unknown fields are refused: a field this tally
// does not know would not be covered by the signature it checks.
func Parse(b []byte, name string) (*Manifest, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, name, err)
	}
	if err := m.Verify(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &m, nil
}

// Load reads and verifies the manifest file at path.
func Load(path string) (*Manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return Parse(b, path)
}

// Save writes m to path (atomically, through a temporary file).
func (m *Manifest) Save(path string) error {
	b, err := m.Marshal()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tally-manifest-*")
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("manifest: %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("manifest: %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("manifest: %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("manifest: %s: %w", path, err)
	}
	return nil
}
