package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/manifest"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// SubmitShares records a member's parts, as the coordinator would take them.
func (f *fakeCoord) SubmitShares(stream grpc.ClientStreamingServer[tallyv1.SubmitSharesRequest, tallyv1.SubmitSharesResponse]) error {
	if err := f.signed(stream.Context(), tallyv1.CoordinatorService_SubmitShares_FullMethodName); err != nil {
		return err
	}
	parts := map[string][]byte{}
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		parts[msg.GetPart()] = append(parts[msg.GetPart()], msg.GetData()...)
	}
	f.mu.Lock()
	f.shares = append(f.shares, parts)
	f.mu.Unlock()
	return stream.SendAndClose(&tallyv1.SubmitSharesResponse{})
}

// manifestFixture is a job manifest for the fake coordinator's job, three
// participants (client-0 is the client under test, with the key in
// keyFile), a committee of 3 with threshold 2, signed by a fresh owner.
type manifestFixture struct {
	m       *manifest.Manifest
	keyFile string
	others  map[string]ed25519.PrivateKey // client-1, client-2
}

func newManifestFixture(t *testing.T, f *fakeCoord, params aggregation.Parameters) *manifestFixture {
	t.Helper()
	dir := t.TempDir()
	seed := bytes.Repeat([]byte{42}, ed25519.SeedSize)
	b, _ := json.Marshal(keyFile{Seed: seed})
	fx := &manifestFixture{keyFile: filepath.Join(dir, "client.key"), others: map[string]ed25519.PrivateKey{}}
	if err := os.WriteFile(fx.keyFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	pc := params.Config()
	pid := params.ID()
	m := &manifest.Manifest{
		Version: manifest.Version, Job: f.job.GetJobId(),
		Schema: manifest.Schema{Features: int(f.job.GetFeatures()), Classes: f.job.GetClassNames(), ModelKind: f.job.GetModel().GetKind()},
		Security: manifest.Security{SecureAggregation: "he", HEParams: hex.EncodeToString(pid[:]), MinLogN: pc.LogN,
			MinLogNoiseFlooding: manifest.LogFlooding(params.NoiseFloodingSigma()), MinGroupSize: 2},
		Committee:    manifest.Committee{Size: 3, Threshold: 2, Rule: manifest.RuleSHA256Rank, Seed: bytes.Repeat([]byte{1}, 32)},
		Coordinator:  manifest.Coordinator{ReceiptKey: manifest.HexBytes(f.receipt.Public().(ed25519.PublicKey)), TLSCertSHA256: bytes.Repeat([]byte{2}, 32)},
		Participants: []manifest.Participant{{ID: "client-0", Key: manifest.HexBytes(ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey))}},
	}
	for _, id := range []string{"client-1", "client-2"} {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		fx.others[id] = priv
		m.Participants = append(m.Participants, manifest.Participant{ID: id, Key: manifest.HexBytes(pub)})
	}
	if f.he != nil {
		// The fake's committee members are participants too: the client
		// checks their key-generation signatures against these keys.
		for _, id := range f.he.ids {
			m.Participants = append(m.Participants, manifest.Participant{ID: id, Key: manifest.HexBytes(f.he.keys[id])})
		}
	}
	_, owner, _ := ed25519.GenerateKey(rand.Reader)
	if err := m.Sign(owner); err != nil {
		t.Fatal(err)
	}
	fx.m = m
	return fx
}

// heFake is a fake coordinator running an HE job with the small test
// parameters, k = 2.
func heFake(t *testing.T, rounds int) *fakeCoord {
	t.Helper()
	f := newFakeCoord(t, rounds)
	f.he = newFakeHE(t, f.job.GetJobId())
	f.job.SecureAggregation, f.job.HeParams, f.job.MinGroupSize = "he", heJobParams(f.he.params.Config()), 2
	return f
}

// runManifestClient runs a client holding fx's manifest against f (the
// local floor lifted: the test parameters are small) and returns Run's
// error.
func runManifestClient(t *testing.T, f *fakeCoord, fx *manifestFixture, receipts string) (*Client, error) {
	t.Helper()
	lis := listen(t, "")
	f.serve(lis)
	c, err := New(Config{Conn: dial(t, lis.Addr().String(), nil), Token: f.token, Data: testData(), PollWait: 50 * time.Millisecond,
		KeyFile: fx.keyFile, Manifest: fx.m, TestOnlyWeakParameters: true, ReceiptsFile: receipts})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return c, c.Run(ctx)
}

// TestManifestHonestCoordinator: the control. A coordinator that keeps to
// the manifest gets the client's encrypted update.
func TestManifestHonestCoordinator(t *testing.T) {
	f := heFake(t, 1)
	fx := newManifestFixture(t, f, f.he.params)
	if _, err := runManifestClient(t, f, fx, filepath.Join(t.TempDir(), "r.jsonl")); err != nil {
		t.Fatalf("Run: %v, want nil", err)
	}
	f.checkProtocol()
	if n := len(f.counts().submissions); n != 1 {
		t.Fatalf("%d submissions, want 1", n)
	}
}

// TestManifestRefusesSecurity (attack d): a coordinator whose HE
// parameters, flooding or k are not the manifest's is refused at join,
// naming the field, and gets no update.
func TestManifestRefusesSecurity(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(f *fakeCoord)
		wants []string
	}{
		{"log_n", func(f *fakeCoord) { f.job.HeParams.LogN = 11 }, []string{"HE parameter set", "security.he_params"}},
		{"flooding", func(f *fakeCoord) { f.job.HeParams.Flooding.Security = 16 }, []string{"flooding noise σ = 2^", "the manifest's security.min_log_noise_flooding is"}},
		{"k", func(f *fakeCoord) {}, nil},
		{"plaintext", func(f *fakeCoord) { f.job.SecureAggregation = "none" }, []string{`secure_aggregation "none", the manifest's is "he"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := heFake(t, 1)
			fx := newManifestFixture(t, f, f.he.params)
			tc.edit(f)
			if tc.name == "k" {
				// The manifest asks for k = 3; the coordinator says 2.
				fx.m.Security.MinGroupSize = 3
				_, owner, _ := ed25519.GenerateKey(rand.Reader)
				if err := fx.m.Sign(owner); err != nil {
					t.Fatal(err)
				}
				tc.wants = []string{"min_group_size 2, the manifest's security.min_group_size is 3"}
			}
			_, err := runManifestClient(t, f, fx, "")
			if n := len(f.counts().submissions); n != 0 {
				t.Errorf("%d updates sent to a coordinator that contradicts the manifest, want 0", n)
			}
			if !errors.Is(err, ErrManifestSecurity) {
				t.Fatalf("Run: %v, want %v", err, ErrManifestSecurity)
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Run: %v, want it to say %q", err, w)
				}
			}
		})
	}
}

// TestManifestRefusesIdentity (attack e, enrolment): a coordinator that
// enrols the client as an id the manifest gives another key (it minted
// the token for someone else), or as an id it does not list, is refused.
func TestManifestRefusesIdentity(t *testing.T) {
	for _, id := range []string{"client-1", "mallory"} {
		t.Run(id, func(t *testing.T) {
			f := heFake(t, 1)
			fx := newManifestFixture(t, f, f.he.params)
			f.clientID = id
			_, err := runManifestClient(t, f, fx, "")
			if !errors.Is(err, ErrManifestIdentity) || !strings.Contains(err.Error(), id) {
				t.Fatalf("Run: %v, want %v naming %q", err, ErrManifestIdentity, id)
			}
			if n := len(f.counts().submissions); n != 0 {
				t.Errorf("%d updates sent, want 0", n)
			}
		})
	}
}

// committeeOf makes a key-generation instance of members (client-0 is the
// client under test, with its X25519 identity); the others are real
// members whose shares a test may use.
func committeeOf(t *testing.T, params aggregation.Parameters, job string, c *Client, ids []string, signers map[string]ed25519.PrivateKey) (*aggregation.KeyGenInstance, map[string]*aggregation.Member) {
	t.Helper()
	policy, err := aggregation.NewPolicy(aggregation.PolicyConfig{MinContributors: 2})
	if err != nil {
		t.Fatal(err)
	}
	members := map[string]*aggregation.Member{}
	infos := []aggregation.MemberInfo{{ID: "client-0", PublicKey: c.identity.PublicKey(), SigningKey: c.sig.publicKey()}}
	for _, id := range ids {
		if id == "client-0" {
			continue
		}
		idn, err := aggregation.NewIdentity(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		signer, ok := signers[id]
		if !ok {
			if _, signer, err = ed25519.GenerateKey(rand.Reader); err != nil {
				t.Fatal(err)
			}
		}
		m, err := aggregation.NewMember(params, id, idn, signer, nil, policy, nil, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		members[id] = m
		infos = append(infos, m.Info())
	}
	inst, err := aggregation.NewKeyGenInstance(params, aggregation.Committee{Job: job, Seed: []byte("crp"), Epoch: 1, Threshold: 2, Members: infos})
	if err != nil {
		t.Fatal(err)
	}
	return inst, members
}

// TestManifestRefusesCommittee (attack e, committee): a key-generation
// task whose committee holds an id the manifest does not list gets no
// share from the client; the same task with the manifest's participants
// does (the control).
func TestManifestRefusesCommittee(t *testing.T) {
	for _, tc := range []struct {
		name    string
		members []string
		refused bool
	}{
		{"participants", []string{"client-0", "client-1", "client-2"}, false},
		{"mallory", []string{"client-0", "client-1", "mallory"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := heFake(t, 1)
			fx := newManifestFixture(t, f, f.he.params)
			lis := listen(t, "")
			f.serve(lis)
			c, err := New(Config{Conn: dial(t, lis.Addr().String(), nil), Token: f.token, Data: testData(), PollWait: 50 * time.Millisecond,
				KeyFile: fx.keyFile, Manifest: fx.m, TestOnlyWeakParameters: true})
			if err != nil {
				t.Fatal(err)
			}
			inst, _ := committeeOf(t, f.he.params, f.job.GetJobId(), c, tc.members, fx.others)
			blob, _ := inst.MarshalBinary()
			sent := false
			f.script = func() *tallyv1.NextTaskResponse {
				if sent {
					return nil
				}
				sent = true
				return &tallyv1.NextTaskResponse{Task: &tallyv1.NextTaskResponse_Keygen{Keygen: &tallyv1.KeyGenTask{TaskId: "keygen/e1", Instance: blob}}}
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			err = c.Run(ctx)
			f.mu.Lock()
			shares := len(f.shares)
			f.mu.Unlock()
			if !tc.refused {
				if err != nil || shares != 1 {
					t.Fatalf("Run: %v with %d share messages, want nil and 1", err, shares)
				}
				return
			}
			if shares != 0 {
				t.Errorf("the client sent %d share messages to a committee with mallory, want 0", shares)
			}
			if !errors.Is(err, ErrManifestCommittee) || !strings.Contains(err.Error(), `"mallory" is not a participant`) {
				t.Fatalf("Run: %v, want %v naming mallory", err, ErrManifestCommittee)
			}
		})
	}
}

// TestManifestRefusesContributor (attack e, decryption): the client is a
// committee member holding a real key share; the coordinator asks it to
// decrypt an aggregate one of whose contributors the manifest does not
// list (a client the coordinator minted). The member refuses and sends no
// decryption share; with every contributor a participant it sends one
// (the control).
func TestManifestRefusesContributor(t *testing.T) {
	for _, tc := range []struct {
		name         string
		contributors []string
		refused      bool
		// single: the ciphertext is the first contributor's update alone,
		// labelled with all of them (issue 14, attack (a)).
		single bool
	}{
		{"participants", []string{"client-1", "client-2"}, false, false},
		{"mallory", []string{"client-1", "mallory"}, true, false},
		{"one update relabelled", []string{"client-1", "client-2"}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := heFake(t, 0)
			fx := newManifestFixture(t, f, f.he.params)
			lis := listen(t, "")
			f.serve(lis)
			c, err := New(Config{Conn: dial(t, lis.Addr().String(), nil), Token: f.token, Data: testData(), PollWait: 50 * time.Millisecond,
				KeyFile: fx.keyFile, Manifest: fx.m, TestOnlyWeakParameters: true})
			if err != nil {
				t.Fatal(err)
			}
			params := f.he.params
			inst, members := committeeOf(t, params, f.job.GetJobId(), c, []string{"client-0", "client-1", "client-2"}, fx.others)
			blob, _ := inst.MarshalBinary()
			// The other members' commitments, computed up front: they
			// depend on the instance only.
			commitments := map[string][]byte{}
			for id, m := range members {
				cm, err := m.Commit(inst)
				if err != nil {
					t.Fatal(err)
				}
				commitments[id] = cm
			}
			pkShares, sealedFor0 := map[string][]byte{}, map[string][]byte{}
			step := 0
			f.script = func() *tallyv1.NextTaskResponse {
				// Called with f.mu held.
				switch {
				case step == 0:
					step++
					return &tallyv1.NextTaskResponse{Task: &tallyv1.NextTaskResponse_Keygen{Keygen: &tallyv1.KeyGenTask{TaskId: "keygen/e1", Instance: blob}}}
				case step == 1 && len(f.shares) == 1:
					step++
					commitments["client-0"] = f.shares[0]["commitment"]
					return &tallyv1.NextTaskResponse{Task: &tallyv1.NextTaskResponse_Reveal{Reveal: &tallyv1.RevealTask{TaskId: "reveal/e1", Instance: blob, Commitments: commitments}}}
				case step == 2 && len(f.shares) == 2:
					step++
					pkShares["client-0"] = f.shares[1]["public-key-share"]
					for id, m := range members {
						out, err := m.Reveal(inst, commitments)
						if err != nil {
							t.Error(err)
							return nil
						}
						pkShares[id], sealedFor0[id] = out.PublicKeyShare, out.Sealed["client-0"]
					}
					f.objects = map[string][]byte{}
					for id, sh := range pkShares {
						f.objects["public-key-share/"+id] = sh
					}
					id := inst.ID()
					return &tallyv1.NextTaskResponse{Task: &tallyv1.NextTaskResponse_Threshold{Threshold: &tallyv1.ThresholdTask{TaskId: "threshold/e1", InstanceId: id[:], Sealed: sealedFor0}}}
				case step == 3 && len(f.shares) == 3:
					step++
					task, objects, err := totalTask(params, inst, pkShares, f.job.GetJobId(), fx, tc.contributors, tc.single)
					if err != nil {
						t.Error(err)
						return nil
					}
					f.objects = objects
					return &tallyv1.NextTaskResponse{Task: &tallyv1.NextTaskResponse_Decrypt{Decrypt: task}}
				case step == 4 && len(f.shares) == 4:
					step++
					return &tallyv1.NextTaskResponse{Task: &tallyv1.NextTaskResponse_Done{Done: &tallyv1.DoneTask{Reason: "done"}}}
				}
				return &tallyv1.NextTaskResponse{Task: &tallyv1.NextTaskResponse_Wait{Wait: &tallyv1.WaitTask{}}}
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			err = c.Run(ctx)
			f.mu.Lock()
			shares := f.shares
			f.mu.Unlock()
			if len(shares) < 3 {
				t.Fatalf("Run: %v after %d share messages; the key generation did not complete", err, len(shares))
			}
			var last map[string][]byte
			if len(shares) == 4 {
				last = shares[3]
			}
			if !tc.refused {
				if err != nil || last["share/0"] == nil {
					t.Fatalf("Run: %v, last message %v; want nil and a decryption share", err, keys(last))
				}
				return
			}
			if last["share/0"] != nil {
				t.Errorf("the member sent a decryption share of an aggregate with an unknown contributor")
			}
			if tc.single {
				// Refused with the reason, and the client goes on.
				if err != nil || !strings.Contains(string(last["refused"]), aggregation.ErrNotASum.Error()) {
					t.Fatalf("Run: %v, refusal %q; want nil and a refusal naming %v", err, last["refused"], aggregation.ErrNotASum)
				}
				return
			}
			if !errors.Is(err, ErrManifestIdentity) || !strings.Contains(err.Error(), `contributor "mallory" is not a participant`) {
				t.Fatalf("Run: %v, want %v naming mallory", err, ErrManifestIdentity)
			}
		})
	}
}

// totalTask is a decryption task of a one-block "total" aggregate of
// contributors' signed encrypted updates (each contributor's signed with
// its manifest key in fx, one not in the manifest with a key of its own),
// and the objects the coordinator serves for it. single: the ciphertext
// is the first contributor's update alone, labelled with all of them
// (issue 14, attack (a)), so that it is not the sum of its contributors'
// signed c₁ (aggregation.ErrNotASum).
func totalTask(params aggregation.Parameters, inst *aggregation.KeyGenInstance, pkShares map[string][]byte, job string, fx *manifestFixture, contributors []string, single bool) (*tallyv1.DecryptTask, map[string][]byte, error) {
	pk, err := aggregation.AggregatePublicKey(params, inst, pkShares)
	if err != nil {
		return nil, nil, err
	}
	enc, err := aggregation.NewEncryptor(params, pk, 1)
	if err != nil {
		return nil, nil, err
	}
	acc, err := aggregation.NewAccumulator(params, enc.KeyID(), 4)
	if err != nil {
		return nil, nil, err
	}
	objects := map[string][]byte{}
	for _, who := range contributors {
		cts, err := enc.EncryptUpdate([]float64{1, 2, 3, 4}, 1)
		if err != nil {
			return nil, nil, err
		}
		signer := fx.others[who]
		if signer == nil {
			_, signer, _ = ed25519.GenerateKey(rand.Reader)
		}
		sub, err := aggregation.NewSubmission(params, job, who, 1, 0, 1, cts, signer)
		if err != nil {
			return nil, nil, err
		}
		objects["submission/"+who], _ = sub.MarshalBinary()
		objects["contribution/"+who+"/0"] = aggregation.ContributionC1(cts[0])
		if single && who != contributors[0] {
			continue
		}
		for _, ct := range cts {
			if err := acc.Add(who, ct); err != nil {
				return nil, nil, err
			}
		}
	}
	agg, err := acc.Finalize()
	if err != nil {
		return nil, nil, err
	}
	agg.Contributors = contributors
	req := aggregation.NewDecryptRequest(agg, "total", 1, []string{"client-0", "client-1"})
	rb, err := req.MarshalBinary()
	if err != nil {
		return nil, nil, err
	}
	objects["ciphertext/0"] = agg.Ciphertexts[0]
	return &tallyv1.DecryptTask{TaskId: "decrypt/1", Request: rb, Blocks: 1}, objects, nil
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestManifestReceiptKey (attack f, with a manifest): a coordinator that
// signs receipts with a key other than the manifest's, and offers that key
// at the join, has its receipts refused.
func TestManifestReceiptKey(t *testing.T) {
	f := heFake(t, 1)
	fx := newManifestFixture(t, f, f.he.params)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	f.receipt = other
	receipts := filepath.Join(t.TempDir(), "r.jsonl")
	_, err := runManifestClient(t, f, fx, receipts)
	if !errors.Is(err, ErrReceiptChain) {
		t.Fatalf("Run: %v, want %v", err, ErrReceiptChain)
	}
	if b, _ := os.ReadFile(receipts); len(b) != 0 {
		t.Errorf("receipts kept under a key the manifest does not name:\n%s", b)
	}
}
