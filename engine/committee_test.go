package engine

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tallyfl/tally/aggregation"
)

// simMember is one client of committeeSim: it answers every task it is
// given at once, with real multiparty CKKS, until it is killed; then it
// neither answers nor polls.
type simMember struct {
	id       string
	identity *aggregation.Identity
	signer   ed25519.PrivateKey
	member   *aggregation.Member
	inst     *aggregation.KeyGenInstance
	enc      *aggregation.Encryptor
	dead     bool
	// dieAfterSubmit: the member dies right after its next train update
	// is accepted, before it is asked to decrypt anything; with
	// leaveOnDeath its long poll is then seen to be cut off (EvLeft), as
	// when a killed process's connection closes under it.
	dieAfterSubmit, leaveOnDeath bool
	// encWeight, when set, is the weight n_i the member encrypts with its
	// update instead of the 10 its header claims.
	encWeight float64
	// batchTicks, when set, is how long the member works on a batch of
	// coefficient shares: it takes the task (the poll that hands it over)
	// and neither polls nor answers for that many ticks, as a member does
	// while it computes them. busy is the task it works on, until tick
	// busyUntil.
	batchTicks int
	busy       *Task
	busyUntil  int
}

// committeeSim drives the pure engine of a 5-client job under secure
// aggregation (committee 5, threshold 3) with members that answer
// immediately and poll every tick. It records, per round, the tick at which
// the round's training task was published and at which the round completed,
// and every decryption request with who was known silent when it was made.
type committeeSim struct {
	t       *testing.T
	e       *Engine
	members map[string]*simMember
	ids     []string
	queue   []*Task
	// onPublish, if set, sees every published task before anyone answers.
	onPublish func(*Task)

	// knownSilent: members that let a decryption request they were asked
	// for time out, or that stopped polling while the others polled.
	knownSilent map[string]string // id → why
	published   map[int]int       // round → tick its first train task was published
	completed   map[int]int       // round → tick it completed
	decryptions []*Task
	timeouts    []string // the tasks that closed at their deadline
	lastSeen    map[string]int
	openTask    *Task
	openSince   int
	done        *ActJobDone
	left        []string // members whose EvLeft is due
	// verifiedRetries counts the re-randomised decryption requests
	// (Retry > 0) a member verified: the public zero it recomputed.
	verifiedRetries int
	persist         Store // if set, receives every ActPersist
	// records are the round records, failed attempts included.
	records  []RoundRecord
	releases []Release
}

func newCommitteeSim(t *testing.T, rounds int) *committeeSim {
	t.Helper()
	return newCommitteeSimWith(t, rounds, nil)
}

// newCommitteeSimWith is newCommitteeSim with the job's configuration
// changed by set before it is validated.
func newCommitteeSimWith(t *testing.T, rounds int, set func(*JobConfig)) *committeeSim {
	t.Helper()
	cfg := JobConfig{
		ID: "sim", Seed: 11, Rounds: rounds,
		Data: DataConfig{Features: 2, Classes: 2},
		// 15 ticks of 1 s: longer than the longest long poll (10 s), as the
		// default 60 s is.
		RoundTimeout: Duration(15 * time.Second), Tick: Duration(time.Second),
		Scaling: ScalingConfig{Mode: "none"}, SecureAggregation: "he",
		// A liveness window far longer than the round timeout: a dead
		// member must be recognised by its silence, not by waiting it out.
		Clients:      ClientsConfig{Min: 3, WaitFor: 5, Liveness: Duration(10 * time.Minute)},
		Committee:    CommitteeConfig{Size: 5, Threshold: 3},
		MinGroupSize: 3,
		HEParams:     insecureHE(),
		Valuation:    ValuationConfig{Mode: ModeOff},
	}
	s := &committeeSim{t: t, members: map[string]*simMember{}, knownSilent: map[string]string{},
		published: map[int]int{}, completed: map[int]int{}, lastSeen: map[string]int{}}
	for i := range 5 {
		id := fmt.Sprintf("m%d", i)
		cfg.Clients.Enrolment = append(cfg.Clients.Enrolment, EnrolmentConfig{ID: id, Token: "token-" + id})
		ident, err := aggregation.NewIdentity(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		_, signer, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		s.members[id] = &simMember{id: id, identity: ident, signer: signer}
		s.ids = append(s.ids, id)
	}
	if set != nil {
		set(&cfg)
	}
	job, err := NewJob(cfg, ".")
	if err != nil {
		t.Fatal(err)
	}
	s.e = NewEngine(job, FedAvg{Fraction: 1, Min: 3, Mean: aggregation.FedAvg}, sumSquares{}, []float64{1, -1})
	return s
}

func (s *committeeSim) step(ev Event) {
	s.t.Helper()
	for _, a := range s.e.Step(ev) {
		switch a := a.(type) {
		case ActPersist:
			if s.persist != nil {
				if err := s.persist.Apply(a); err != nil {
					s.t.Fatal(err)
				}
			}
		case ActPublish:
			s.publish(a.Task)
		case ActRoundDone:
			if !a.Record.Failed {
				s.completed[a.Record.Round] = s.e.now
			}
			s.records = append(s.records, a.Record)
		case ActJobDone:
			s.done = &a
		case ActRelease:
			s.releases = append(s.releases, a.Release)
		case ActReply:
			if a.Err != nil && !strings.Contains(a.Err.Error(), "no open task") {
				s.t.Fatalf("tick %d: %s refused: %v", s.e.now, a.Client, a.Err)
			}
			if m := s.members[a.Client]; a.Err == nil && m.dieAfterSubmit && strings.Contains(a.TaskID, "/train/") {
				m.dead, m.dieAfterSubmit = true, false
				if m.leaveOnDeath {
					s.left = append(s.left, m.id)
				}
			}
		}
	}
}

func (s *committeeSim) publish(t *Task) {
	if o := s.openTask; o != nil && s.e.now >= o.Deadline {
		s.timeouts = append(s.timeouts, o.ID)
		if o.Kind == TaskDecrypt {
			for _, id := range o.Selected {
				if s.members[id].dead {
					s.knownSilent[id] = "silent in " + o.ID
				}
			}
		}
		// Members that did not poll while the timed-out task was open,
		// when the others did, are known not to be polling.
		for _, id := range s.ids {
			if s.lastSeen[id] < s.openSince {
				s.knownSilent[id] = fmt.Sprintf("not polling since tick %d", s.lastSeen[id])
			}
		}
	}
	s.openTask, s.openSince = t, s.e.now
	if t.Kind == TaskTrain {
		if _, ok := s.published[t.Round]; !ok {
			s.published[t.Round] = s.e.now
		}
	}
	if t.Kind == TaskDecrypt {
		for _, id := range t.Selected {
			if why, ok := s.knownSilent[id]; ok {
				s.t.Errorf("tick %d: decryption %s addressed to %s, known silent (%s)", s.e.now, t.ID, id, why)
			}
		}
		s.decryptions = append(s.decryptions, t)
	}
	if s.onPublish != nil {
		s.onPublish(t)
	}
	s.queue = append(s.queue, t)
}

// simKeys pins the members' identity keys, as a manifest does.
type simKeys map[string]ed25519.PublicKey

func (k simKeys) IdentityKey(id string) (ed25519.PublicKey, bool) {
	key, ok := k[id]
	return key, ok
}

func (s *committeeSim) keys() simKeys {
	k := simKeys{}
	for id, m := range s.members {
		k[id] = m.signer.Public().(ed25519.PublicKey)
	}
	return k
}

// answer lets every live selected member do the queued tasks.
func (s *committeeSim) answer() {
	for len(s.queue) > 0 {
		t := s.queue[0]
		s.queue = s.queue[1:]
		for _, id := range t.Selected {
			if m := s.members[id]; !m.dead && s.e.Task() == t {
				if m.batchTicks > 0 && t.Coefficient {
					// The poll that hands the batch over, then the work.
					s.lastSeen[id] = s.e.now
					s.step(EvPoll{Client: id})
					m.busy, m.busyUntil = t, s.e.now+m.batchTicks
					continue
				}
				s.do(m, t)
			}
			// A member that died in a poll is seen to leave before the
			// next member answers.
			for len(s.left) > 0 {
				id := s.left[0]
				s.left = s.left[1:]
				s.knownSilent[id] = "its poll was cut off"
				s.step(EvLeft{Client: id})
			}
		}
	}
}

func (s *committeeSim) do(m *simMember, t *Task) {
	s.t.Helper()
	params := s.e.job.Params
	fail := func(err error) { s.t.Fatalf("member %s, task %s: %v", m.id, t.ID, err) }
	s.lastSeen[m.id] = s.e.now
	switch t.Kind {
	case TaskKeyGen:
		inst, err := aggregation.UnmarshalKeyGenInstance(params, t.Blob)
		if err != nil {
			fail(err)
		}
		policy, _ := aggregation.NewPolicy(aggregation.PolicyConfig{MinContributors: 3})
		if m.member, err = aggregation.NewMember(params, m.id, m.identity, m.signer, s.keys(), policy, nil, rand.Reader); err != nil {
			fail(err)
		}
		m.inst = inst
		c, err := m.member.Commit(inst)
		if err != nil {
			fail(err)
		}
		s.step(EvShares{Client: m.id, TaskID: t.ID, Parts: map[string][]byte{"commitment": c}})
	case TaskReveal:
		sh, err := m.member.Reveal(m.inst, t.Commitments)
		if err != nil {
			fail(err)
		}
		parts := map[string][]byte{"public-key-share": sh.PublicKeyShare}
		for to, v := range sh.Sealed {
			parts["sealed/"+to] = v
		}
		s.step(EvShares{Client: m.id, TaskID: t.ID, Parts: parts})
	case TaskThreshold:
		_, sig, err := m.member.CertifyPublicKey(m.inst, t.PublicKeyShares)
		if err != nil {
			fail(err)
		}
		if err := m.member.ReceiveThresholdShares(m.inst, t.Sealed[m.id]); err != nil {
			fail(err)
		}
		s.step(EvShares{Client: m.id, TaskID: t.ID, Parts: map[string][]byte{"ack": {1}, "public-key-signature": sig}})
	case TaskTrain:
		if m.enc == nil || m.enc.KeyID() != t.KeyID {
			// As a client does: no key without every member's signature.
			if _, err := aggregation.VerifyPublicKey(params, t.PublicKey, t.KeyCertificate, s.keys()); err != nil {
				fail(err)
			}
			enc, err := aggregation.NewEncryptor(params, t.PublicKey, 1)
			if err != nil {
				fail(err)
			}
			m.enc = enc
		}
		w := 10.0
		if m.encWeight != 0 {
			w = m.encWeight
		}
		cts, err := m.enc.EncryptUpdate([]float64{0.01, -0.01}, w)
		if err != nil {
			fail(err)
		}
		// As a client does: it signs what it sends, and the coordinator
		// keeps the signed statement and each block's c1 for the members.
		sub, err := aggregation.NewSubmission(params, s.e.job.ID, m.id, uint64(t.Round), uint64(t.Attempt), uint64(w), cts, m.signer)
		if err != nil {
			fail(err)
		}
		raw, err := sub.MarshalBinary()
		if err != nil {
			fail(err)
		}
		if err := t.Submissions.Put(m.id, raw, sub); err != nil {
			fail(err)
		}
		for b, ct := range cts {
			if err := t.Acc.Add(m.id, ct); err != nil {
				fail(err)
			}
			if t.Influence != nil {
				if err := t.Influence.Add(m.id, ct); err != nil {
					fail(err)
				}
			}
			if err := t.Submissions.AddBlock(m.id, b, ct); err != nil {
				fail(err)
			}
		}
		s.step(EvSubmit{Client: m.id, TaskID: t.ID, Samples: 10, Encrypted: true})
	case TaskDecrypt:
		if t.Coefficient {
			parts, err := s.batchAnswer(m, t)
			if err != nil {
				fail(err)
			}
			s.step(EvShares{Client: m.id, TaskID: t.ID, Parts: parts})
			return
		}
		var req aggregation.DecryptRequest
		if err := req.UnmarshalBinary(t.Blob); err != nil {
			fail(err)
		}
		ev := aggregation.Evidence{Ciphertexts: t.Ciphertexts, Submissions: map[string][]byte{}, Gradient: t.Gradient,
			Contribution: func(client string, b int) ([]byte, error) {
				c1, ok := t.Submissions.Contribution(client, b)
				if !ok {
					return nil, fmt.Errorf("no contribution %s/%d", client, b)
				}
				return c1, nil
			}}
		for _, id := range req.Contributors {
			if raw, _, ok := t.Submissions.Submission(id); ok {
				ev.Submissions[id] = raw
			}
		}
		if err := m.member.VerifyAggregate(req, ev); err != nil {
			fail(err)
		}
		if req.Retry > 0 {
			s.verifiedRetries++
		}
		var entries []aggregation.TranscriptEntry
		for _, b := range t.Transcript[m.id] {
			var e aggregation.TranscriptEntry
			if err := e.UnmarshalBinary(b); err != nil {
				fail(err)
			}
			entries = append(entries, e)
		}
		sig, err := m.member.Admit(req, entries)
		if err != nil {
			fail(err)
		}
		parts := map[string][]byte{"transcript-signature": sig}
		for b, ct := range t.Ciphertexts {
			share, err := m.member.DecryptShare(req, b, ct)
			if err != nil {
				fail(err)
			}
			parts[fmt.Sprintf("share/%d", b)] = share
		}
		s.step(EvShares{Client: m.id, TaskID: t.ID, Parts: parts})
	}
}

// tick: every live member polls, the tasks are answered, a tick passes.
func (s *committeeSim) tick() {
	for _, id := range s.ids {
		if m := s.members[id]; m.busy != nil && s.e.now >= m.busyUntil {
			// Its answer, to a batch that may have been completed by the
			// others meanwhile (it is then told there is no open task).
			t := m.busy
			m.busy = nil
			s.do(m, t)
		}
	}
	for _, id := range s.ids {
		if m := s.members[id]; !m.dead && m.busy == nil {
			s.lastSeen[id] = s.e.now
			s.step(EvPoll{Client: id})
		}
	}
	s.answer()
	s.step(EvTick{})
	s.answer()
}

func (s *committeeSim) run(maxTicks int) {
	for _, id := range s.ids {
		m := s.members[id]
		s.step(EvJoin{Client: id, Samples: 10, IdentityKey: m.identity.PublicKey(), SigningKey: m.signer.Public().(ed25519.PublicKey)})
	}
	s.answer()
	for i := 0; i < maxTicks && s.done == nil; i++ {
		s.tick()
	}
}

// TestCommitteeLosesCMinusT: two of a 5-member, threshold-3 committee die
// in round 2: while training (they never submit), right after submitting
// (they are gone before any decryption request, and nothing says so but
// their silence), or right after submitting with their connection seen to
// close (EvLeft). At most one round timeout is lost in all (none when the
// engine is told they left), every later round completes in the tick it
// starts, and no decryption request is addressed to a member known silent.
func TestCommitteeLosesCMinusT(t *testing.T) {
	for _, how := range []string{"while-training", "after-submitting", "after-submitting-left"} {
		t.Run(how, func(t *testing.T) {
			const rounds = 6
			s := newCommitteeSim(t, rounds)
			killed := false
			s.onPublish = func(task *Task) {
				if killed || task.Kind != TaskTrain || task.Round != 2 {
					return
				}
				killed = true
				// The members the first decryptions would be likely to ask:
				// any two of the committee, here the first two.
				for _, id := range s.ids[:2] {
					switch how {
					case "while-training":
						s.members[id].dead = true
					case "after-submitting":
						s.members[id].dieAfterSubmit = true
					default:
						s.members[id].dieAfterSubmit, s.members[id].leaveOnDeath = true, true
					}
				}
			}
			s.run(20 * 15 * rounds)
			if s.done == nil || s.done.FinalRound != rounds {
				t.Fatalf("job did not complete %d rounds: %+v; timeouts %v", rounds, s.done, s.timeouts)
			}
			timeout := s.e.job.Ticks(s.e.job.RoundTimeout)
			var lost int
			for r := 2; r <= rounds; r++ {
				took := s.completed[r] - s.published[r]
				t.Logf("round %d: published at tick %d, completed at tick %d (%d ticks)", r, s.published[r], s.completed[r], took)
				lost += took
				if r > 2 && took > 1 {
					t.Errorf("round %d took %d ticks after the deaths in round 2; later rounds must run at normal speed", r, took)
				}
			}
			t.Logf("round timeouts: %v; re-randomised requests verified by members: %d", s.timeouts, s.verifiedRetries)
			if how == "after-submitting" && s.verifiedRetries == 0 {
				t.Error("no member verified a re-randomised request, though the first decryption's participants died")
			}
			if how == "after-submitting-left" && len(s.timeouts) > 0 {
				t.Errorf("timeouts %v, though the engine was told both members left before any decryption", s.timeouts)
			}
			if len(s.timeouts) > 1 || lost > timeout+1 {
				t.Errorf("%d ticks and %d timeouts (%v) lost after two of five members died, want at most one round timeout (%d ticks)", lost, len(s.timeouts), s.timeouts, timeout)
			}
			for _, d := range s.decryptions {
				if d.Round > 2 && slices.ContainsFunc(d.Selected, func(id string) bool { return s.members[id].dead }) {
					t.Errorf("decryption %s of round %d asks a dead member: %v", d.ID, d.Round, d.Selected)
				}
			}
		})
	}
}

// insecureHE is a small CKKS parameter set: fast, and insecure, so it
// lives only in test files (coordinator's tests have the same one).
func insecureHE() *aggregation.ParametersConfig {
	c := aggregation.DefaultConfig()
	c.LogN = 10
	c.Insecure = true
	return &c
}

// TestEngineRefusesRevealNotCommitted: a member (or whoever speaks for it)
// that reveals a public-key share other than the one it committed to —
// one chosen after seeing the commitments — is refused with
// aggregation.ErrCommitment, the rogue share goes nowhere, and the honest
// reveal that follows completes the key generation and the job.
func TestEngineRefusesRevealNotCommitted(t *testing.T) {
	const rounds = 2
	s := newCommitteeSim(t, rounds)
	var honest []byte
	tried := false
	s.onPublish = func(task *Task) {
		switch {
		case task.Kind == TaskReveal && !tried:
			tried = true
			m := s.members[task.Selected[0]]
			sh, err := m.member.Reveal(m.inst, task.Commitments)
			if err != nil {
				t.Fatal(err)
			}
			honest = sh.PublicKeyShare
			rogue := slices.Clone(sh.PublicKeyShare)
			rogue[len(rogue)-1] ^= 1
			parts := map[string][]byte{"public-key-share": rogue}
			for to, v := range sh.Sealed {
				parts["sealed/"+to] = v
			}
			var refused error
			for _, a := range s.e.Step(EvShares{Client: m.id, TaskID: task.ID, Parts: parts}) {
				if r, ok := a.(ActReply); ok {
					refused = r.Err
				}
			}
			if !errors.Is(refused, aggregation.ErrCommitment) {
				t.Fatalf("a reveal that differs from its commitment: reply %v, want aggregation.ErrCommitment", refused)
			}
			t.Logf("refused: %v", refused)
		case task.Kind == TaskThreshold:
			if !bytes.Equal(task.PublicKeyShares[task.Selected[0]], honest) {
				t.Fatal("the threshold task does not carry the share the member committed to")
			}
		}
	}
	s.run(20 * 15 * rounds)
	if !tried {
		t.Fatal("no reveal task was published")
	}
	if s.done == nil || s.done.FinalRound != rounds {
		t.Fatalf("job did not complete %d rounds after the refused reveal: %+v; timeouts %v", rounds, s.done, s.timeouts)
	}
}
