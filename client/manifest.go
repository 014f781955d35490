package client

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/manifest"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// Errors of a client that holds the coordinator to a job manifest
// (Config.Manifest) and to its own floor. Each is returned before the
// client sends anything the contradicted value would govern: no update, no
// key-generation share, no decryption share.
var (
	// ErrManifestTask: the job (id, features, classes, model) is not the
	// manifest's.
	ErrManifestTask = errors.New("client: the coordinator's job contradicts the manifest")
	// ErrManifestSecurity: secure aggregation, the HE parameter set, the
	// flooding noise or k is not the manifest's or below its floor.
	ErrManifestSecurity = errors.New("client: the coordinator's security settings contradict the manifest")
	// ErrScalars: the job declares more released scalars per client and
	// round (projection valuation) than the manifest's L.
	ErrScalars = errors.New("client: the job releases more scalars per client and round than the manifest's L")
	// ErrManifestCommittee: a committee is not drawn by the manifest's rule
	// from its participants, or has another size or threshold.
	ErrManifestCommittee = errors.New("client: the committee contradicts the manifest")
	// ErrManifestIdentity: an identity the coordinator names (this
	// client's own, a contributor, a decrypting member) is not a
	// participant of the manifest, or not with this key.
	ErrManifestIdentity = errors.New("client: an identity the coordinator names is not in the manifest")
	// ErrFloor: the job is below this client's local floor, which holds
	// whatever the manifest says.
	ErrFloor = errors.New("client: the job is below this client's security floor")
)

// The local floor (issue 13): a client refuses these whatever its manifest
// says. log_n 14 is the smallest ring the HE standard rates at 128 bits
// for the default moduli (aggregation.MaxLogQP); k = 3 is the smallest
// group in which no two colluding contributors learn the third's update.
const (
	FloorLogN         = 14
	FloorMinGroupSize = 3
)

// checkFloor refuses parameters below the local floor.
func (c *Client) checkFloor(job *tallyv1.JobSpec, params aggregation.Parameters) error {
	if c.cfg.TestOnlyWeakParameters {
		return nil
	}
	cfg := params.Config()
	var errs []error
	if cfg.Insecure || params.Insecure() {
		errs = append(errs, fmt.Errorf("%w: he_params.insecure is set", ErrFloor))
	}
	if cfg.LogN < FloorLogN {
		errs = append(errs, fmt.Errorf("%w: he_params.log_n is %d, the floor is %d", ErrFloor, cfg.LogN, FloorLogN))
	}
	if k := int(job.GetMinGroupSize()); k < FloorMinGroupSize {
		errs = append(errs, fmt.Errorf("%w: min_group_size is %d, the floor is %d", ErrFloor, k, FloorMinGroupSize))
	}
	return errors.Join(errs...)
}

// checkSchema checks the open schema call's answer against the manifest,
// before the client spends its token.
func (c *Client) checkSchema(schema *tallyv1.SchemaResponse) error {
	m := c.cfg.Manifest
	if m == nil {
		return nil
	}
	var errs []error
	if schema.GetJobId() != m.Job {
		errs = append(errs, fmt.Errorf("%w: job id %q, the manifest's is %q", ErrManifestTask, schema.GetJobId(), m.Job))
	}
	if int(schema.GetFeatures()) != m.Schema.Features {
		errs = append(errs, fmt.Errorf("%w: features %d, the manifest's schema.features is %d", ErrManifestTask, schema.GetFeatures(), m.Schema.Features))
	}
	if !slices.Equal(schema.GetClassNames(), m.Schema.Classes) {
		errs = append(errs, fmt.Errorf("%w: classes %q, the manifest's schema.classes are %q", ErrManifestTask, schema.GetClassNames(), m.Schema.Classes))
	}
	return errors.Join(errs...)
}

// checkJob checks the job a client joined, and the identity it was
// enrolled as, against the manifest. params are the job's HE parameters
// (zero when the job has none).
func (c *Client) checkJob(id string, job *tallyv1.JobSpec, params aggregation.Parameters) error {
	m := c.cfg.Manifest
	if m == nil {
		return nil
	}
	var errs []error
	task := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrManifestTask}, a...)...))
	}
	sec := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrManifestSecurity}, a...)...))
	}
	if job.GetJobId() != m.Job {
		task("job id %q, the manifest's is %q", job.GetJobId(), m.Job)
	}
	if int(job.GetFeatures()) != m.Schema.Features {
		task("features %d, the manifest's schema.features is %d", job.GetFeatures(), m.Schema.Features)
	}
	if !slices.Equal(job.GetClassNames(), m.Schema.Classes) {
		task("classes %q, the manifest's schema.classes are %q", job.GetClassNames(), m.Schema.Classes)
	}
	ms := job.GetModel()
	hidden := make([]int, len(ms.GetHidden()))
	for i, h := range ms.GetHidden() {
		hidden[i] = int(h)
	}
	if ms.GetKind() != m.Schema.ModelKind || !slices.Equal(hidden, m.Schema.Hidden) || ms.GetActivation() != m.Schema.Activation {
		task("model %s hidden %v activation %q, the manifest's schema is %s hidden %v activation %q",
			ms.GetKind(), hidden, ms.GetActivation(), m.Schema.ModelKind, m.Schema.Hidden, m.Schema.Activation)
	}
	if job.GetSecureAggregation() != m.Security.SecureAggregation {
		sec("secure_aggregation %q, the manifest's is %q", job.GetSecureAggregation(), m.Security.SecureAggregation)
	} else {
		cfg := params.Config()
		pid := params.ID()
		if got := hex.EncodeToString(pid[:]); got != m.Security.HEParams {
			sec("HE parameter set %s (log_n %d, log_q %v, log_p %v), the manifest's security.he_params is %s", got, cfg.LogN, cfg.LogQ, cfg.LogP, m.Security.HEParams)
		}
		if cfg.LogN < m.Security.MinLogN {
			sec("he_params.log_n %d, the manifest's security.min_log_n is %d", cfg.LogN, m.Security.MinLogN)
		}
		if l := max(m.Security.MaxScalarsPerClientRound, 1); int(job.GetScalarsPerRound()) > l {
			sec("%w: the job asks for %d scalars per client and round, the manifest's security.max_scalars_per_client_round is %d", ErrScalars, job.GetScalarsPerRound(), l)
		}
		if lf := manifest.LogFlooding(params.NoiseFloodingSigma()); lf < m.Security.MinLogNoiseFlooding {
			sec("flooding noise σ = 2^%d, the manifest's security.min_log_noise_flooding is %d", lf, m.Security.MinLogNoiseFlooding)
		}
		if k := int(job.GetMinGroupSize()); k < m.Security.MinGroupSize {
			sec("min_group_size %d, the manifest's security.min_group_size is %d", k, m.Security.MinGroupSize)
		}
	}
	// A token is a way in, not an identity: the id the coordinator
	// enrolled this client as must be the manifest's for this client's key.
	mine := c.sig.publicKey()
	switch key, ok := m.IdentityKey(id); {
	case !ok:
		errs = append(errs, fmt.Errorf("%w: the coordinator enrolled this client as %q, who is not a participant", ErrManifestIdentity, id))
	case !key.Equal(mine):
		errs = append(errs, fmt.Errorf("%w: the coordinator enrolled this client as %q, whose key in the manifest is %x, not this client's %x", ErrManifestIdentity, id, []byte(key)[:8], []byte(mine)[:8]))
	}
	return errors.Join(errs...)
}

// checkCommittee checks a key-generation instance against the manifest's
// committee rule before this client sends any share of it.
func (c *Client) checkCommittee(taskID string, inst *aggregation.KeyGenInstance) error {
	m := c.cfg.Manifest
	if m == nil {
		return nil
	}
	var ids []string
	for _, mi := range inst.Members() {
		ids = append(ids, mi.ID)
	}
	absent, err := m.CheckCommittee(inst.Epoch(), ids, inst.Threshold())
	if err != nil {
		return fmt.Errorf("%w: key-generation task %s: %w", ErrManifestCommittee, taskID, err)
	}
	if len(absent) > 0 {
		// Legitimate when they are offline; the coordinator's one lever
		// over the draw, so it is said.
		c.log.Warn("the committee skips participants the coordinator counted absent", "task", taskID, "epoch", inst.Epoch(), "absent", absent)
	}
	return nil
}

// checkDecryptRequest checks that every contributor of an aggregate and
// every member asked to decrypt it is a participant of the manifest.
func (c *Client) checkDecryptRequest(taskID string, req aggregation.DecryptRequest) error {
	m := c.cfg.Manifest
	if m == nil {
		return nil
	}
	for _, id := range req.Contributors {
		if _, ok := m.IdentityKey(id); !ok {
			return fmt.Errorf("%w: decryption task %s: contributor %q is not a participant", ErrManifestIdentity, taskID, id)
		}
	}
	for _, id := range req.Participants {
		if _, ok := m.IdentityKey(id); !ok {
			return fmt.Errorf("%w: decryption task %s: decrypting member %q is not a participant", ErrManifestIdentity, taskID, id)
		}
	}
	return nil
}

// receiptKey is the key this client checks receipts with: the manifest's,
// never one a join reply offers; without a manifest, the join reply's.
func (c *Client) receiptKey(offered []byte) ed25519.PublicKey {
	if m := c.cfg.Manifest; m != nil {
		if len(offered) > 0 && !ed25519.PublicKey(offered).Equal(ed25519.PublicKey(m.Coordinator.ReceiptKey)) {
			c.log.Error("the coordinator offers a receipt key that is not the manifest's; receipts are checked with the manifest's",
				"offered", hex.EncodeToString(offered), "manifest", hex.EncodeToString(m.Coordinator.ReceiptKey))
		}
		return ed25519.PublicKey(m.Coordinator.ReceiptKey)
	}
	if len(offered) == ed25519.PublicKeySize {
		return ed25519.PublicKey(offered)
	}
	return nil
}

var _ interface {
	IdentityKey(string) (ed25519.PublicKey, bool)
} = (*manifest.Manifest)(nil)

// violation reports whether err is a contradiction of the manifest, the
// floor or the receipts kept, on which a client stops.
func violation(err error) bool {
	for _, e := range []error{ErrManifestTask, ErrManifestSecurity, ErrManifestCommittee, ErrManifestIdentity, ErrFloor, ErrReceiptChain, ErrTranscriptHead} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
