package coordinator

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/engine"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// collectiveKey runs a 2-of-2 key generation of job through the public
// API, as the committee would, and returns the collective public key.
func collectiveKey(t *testing.T, params aggregation.Parameters, job string) []byte {
	t.Helper()
	policy, err := aggregation.NewPolicy(aggregation.PolicyConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var members []*aggregation.Member
	var infos []aggregation.MemberInfo
	for _, id := range []string{"m0", "m1"} {
		x, err := aggregation.NewIdentity(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		_, sk, _ := ed25519.GenerateKey(rand.Reader)
		m, err := aggregation.NewMember(params, id, x, sk, nil, policy, nil, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		members, infos = append(members, m), append(infos, m.Info())
	}
	inst, err := aggregation.NewKeyGenInstance(params, aggregation.Committee{Job: job, Seed: []byte("seed"), Threshold: 2, Members: infos})
	if err != nil {
		t.Fatal(err)
	}
	commitments := map[string][]byte{}
	for _, m := range members {
		if commitments[m.ID()], err = m.Commit(inst); err != nil {
			t.Fatal(err)
		}
	}
	shares := map[string][]byte{}
	for _, m := range members {
		out, err := m.Reveal(inst, commitments)
		if err != nil {
			t.Fatal(err)
		}
		shares[m.ID()] = out.PublicKeyShare
	}
	pk, err := aggregation.AggregatePublicKey(params, inst, shares)
	if err != nil {
		t.Fatal(err)
	}
	return pk
}

// TestCoordinatorRefusesUnsignedSubmission: the coordinator checks an
// encrypted upload's signed statement against the client's enrolled key
// and the task before any ciphertext touches a sum, and refuses, with
// ErrBadSubmission, a statement signed by another key, for another round,
// or that does not cover the ciphertexts sent.
func TestCoordinatorRefusesUnsignedSubmission(t *testing.T) {
	cfg := engine.JobConfig{
		ID: "sub", Seed: 3, Rounds: 1,
		Data:         engine.DataConfig{Features: 2, Classes: 2},
		RoundTimeout: engine.Duration(time.Second), Tick: engine.Duration(100 * time.Millisecond),
		Clients:   engine.ClientsConfig{Min: 3, WaitFor: 3},
		Committee: engine.CommitteeConfig{Size: 3, Threshold: 2},
		HEParams:  insecureHE(),
	}
	for _, id := range []string{"c0", "c1", "c2"} {
		cfg.Clients.Enrolment = append(cfg.Clients.Enrolment, engine.EnrolmentConfig{ID: id, Token: "token-" + id + "-xyz"})
	}
	job, err := engine.NewJob(cfg, ".")
	if err != nil {
		t.Fatal(err)
	}
	params := job.Params
	pk := collectiveKey(t, params, job.ID)
	enc, err := aggregation.NewEncryptor(params, pk, 1)
	if err != nil {
		t.Fatal(err)
	}
	const numParams = 10
	acc, err := aggregation.NewAccumulator(params, enc.KeyID(), numParams)
	if err != nil {
		t.Fatal(err)
	}
	task := &engine.Task{ID: "sub/train/r2/a1", Kind: engine.TaskTrain, Round: 2, Attempt: 1, KeyID: enc.KeyID(), Acc: acc,
		Submissions: aggregation.NewSubmissionStore()}
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	s := &Service{job: job, keys: map[string]ed25519.PublicKey{"c0": pub}}
	cts, err := enc.EncryptUpdate(make([]float64, numParams), 4)
	if err != nil {
		t.Fatal(err)
	}
	header := func(round, attempt uint64, signer ed25519.PrivateKey) *tallyv1.SubmitHeader {
		sub, err := aggregation.NewSubmission(params, job.ID, "c0", round, attempt, 4, cts, signer)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := sub.MarshalBinary()
		return &tallyv1.SubmitHeader{TaskId: task.ID, Samples: 4, Encoding: "ckks", Length: 1, Submission: raw}
	}
	for _, tc := range []struct {
		name string
		h    *tallyv1.SubmitHeader
	}{
		{"no statement", &tallyv1.SubmitHeader{TaskId: task.ID, Samples: 4, Encoding: "ckks", Length: 1}},
		{"signed by another key", header(2, 1, other)},
		{"another round", header(1, 1, key)},
		{"another attempt", header(2, 2, key)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.checkSubmission("c0", tc.h, task, 1); !errors.Is(err, ErrBadSubmission) {
				t.Fatalf("err = %v, want ErrBadSubmission", err)
			}
		})
	}
	t.Run("weight other than the header's", func(t *testing.T) {
		h := header(2, 1, key)
		h.Samples = 5
		if _, err := s.checkSubmission("c0", h, task, 1); !errors.Is(err, ErrBadSubmission) {
			t.Fatalf("err = %v, want ErrBadSubmission", err)
		}
	})
	t.Run("honest, then a ciphertext it does not cover", func(t *testing.T) {
		sub, err := s.checkSubmission("c0", header(2, 1, key), task, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := sub.CheckCiphertext(params, 0, cts[0]); err != nil {
			t.Fatal(err)
		}
		another, err := enc.EncryptUpdate(make([]float64, numParams), 4)
		if err != nil {
			t.Fatal(err)
		}
		if err := sub.CheckCiphertext(params, 0, another[0]); !errors.Is(err, aggregation.ErrSubmissionMismatch) {
			t.Fatalf("err = %v, want aggregation.ErrSubmissionMismatch", err)
		}
		if _, _, ok := task.Submissions.Submission("c0"); !ok {
			t.Fatal("the verified statement was not kept for the members")
		}
	})
}
