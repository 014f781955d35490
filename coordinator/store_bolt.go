package coordinator

import (
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"

	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/ledger"
)

// Buckets of the coordinator's state in its bbolt file.
const (
	bucketClients = "clients"
	bucketRounds  = "rounds"
	bucketState   = "state"
	// bucketTranscript holds the decryption transcript, one entry per
	// key (its sequence number, zero-padded so that keys sort in order).
	bucketTranscript = "transcript"
	transcriptKey    = "%012d"
	keyGlobal        = "global"
	keyScaler        = "scaler"
	keyCommittee     = "committee"
	// keyRedundancy holds the job-level redundancy accumulator
	// (engine.RedundancyRecord, JSON: its sums base64, about 24 bytes a
	// pair of clients), replaced with every round that feeds it. A file
	// written before it was stored has none.
	keyRedundancy   = "redundancy"
	keyJob          = "job"
	roundKeyAttempt = "%s/%06d"
)

// BoltStore is the crash-safe Store: every ActPersist is one bbolt
// transaction, so a kill at any moment leaves the state of the last
// completed step. A completed round's model, record and signed receipts are
// written in the same transaction: the receipts of a round exist if and only
// if the round does.
type BoltStore struct {
	db  *ledger.DB
	job string
	key ed25519.PrivateKey
	// hadState is true when the file already belonged to the job at open.
	hadState bool
	// backup, when set, receives a copy of the file after every completed
	// round (BackupEachRound); log reports a copy that failed.
	backup string
	log    *slog.Logger
}

// BackupEachRound makes every later Apply that completes a round write a
// consistent copy of the state file to path (ledger.DB.Backup: atomically
// replaced, 0600). A copy that fails is logged as an error and does not
// fail the round: the state file itself was written. Call it before the
// store is used.
func (s *BoltStore) BackupEachRound(path string) { s.backup = path }

// ErrOtherJob is returned when a state file belongs to another job.
var ErrOtherJob = errors.New("coordinator: the state file belongs to another job")

// recoverHint ends the error of a damaged state file.
const recoverHint = `: the coordinator does not start over on a damaged state file; restore a copy (tally ledger backup, or the coordinator's --backup file) as the README's "Recovering a damaged state file" says`

// OpenBoltStore opens (or creates) the state file of job at path. The
// signing key is created at first start and kept in the same file.
//
// An existing file is checked before anything is written to it: ledger.Open
// refuses one that is empty, truncated or structurally damaged, and the
// stored receipts must verify (hashes, chain and signatures under the key
// in the file), so a coordinator never appends to a ledger that is already
// broken. Each refusal wraps ledger.ErrCorrupt or ledger.ErrVerify and
// names the file; the file is left as it was.
func OpenBoltStore(path, job string) (*BoltStore, error) { return openBoltStore(path, job, nil) }

// openBoltStore is OpenBoltStore signing with key, when not nil: a new
// file stores it, a file holding another key is refused (ledger.ErrOtherKey).
func openBoltStore(path, job string, key ed25519.PrivateKey) (*BoltStore, error) {
	db, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		if errors.Is(err, ledger.ErrCorrupt) {
			err = fmt.Errorf("%w%s", err, recoverHint)
		}
		return nil, err
	}
	if key != nil {
		// Before anything reads the key: a new file would make one.
		if err := db.AdoptSigningKey(key); err != nil {
			db.Close()
			return nil, fmt.Errorf("coordinator: state file: %w", err)
		}
	}
	if err := db.Verify(); err != nil && !errors.Is(err, ledger.ErrNoKey) {
		db.Close()
		return nil, fmt.Errorf("coordinator: state file %s: %w%s", path, err, recoverHint)
	}
	var stored string
	var had bool
	err = db.View(func(tx *ledger.Tx) error {
		var err error
		had, err = tx.Get(bucketState, keyJob, &stored)
		return err
	})
	if err == nil && had && stored != job {
		err = fmt.Errorf("%w: %s holds job %q, not %q", ErrOtherJob, path, stored, job)
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	key, err = db.SigningKey()
	if err != nil {
		db.Close()
		return nil, err
	}
	if !had {
		if err := db.Update(func(tx *ledger.Tx) error { return tx.Put(bucketState, keyJob, job) }); err != nil {
			db.Close()
			return nil, err
		}
	}
	return &BoltStore{db: db, job: job, key: key, hadState: had}, nil
}

// Close closes the file.
func (s *BoltStore) Close() error { return s.db.Close() }

// DB is the underlying ledger database.
func (s *BoltStore) DB() *ledger.DB { return s.db }

// PublicKey is the coordinator's receipt-signing key.
func (s *BoltStore) PublicKey() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

// Apply implements Store.
func (s *BoltStore) Apply(p engine.ActPersist) error {
	if err := s.apply(p); err != nil {
		return err
	}
	if s.backup != "" && p.Round != nil && !p.Round.Failed {
		if _, err := s.db.Backup(s.backup); err != nil {
			s.logger().Error("state file backup failed", "state", s.db.Path(), "backup", s.backup, "round", p.Round.Round, "err", err)
		}
	}
	return nil
}

func (s *BoltStore) logger() *slog.Logger {
	if s.log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.log
}

func (s *BoltStore) apply(p engine.ActPersist) error {
	return s.db.Update(func(tx *ledger.Tx) error {
		if p.Client != nil {
			if err := tx.Put(bucketClients, p.Client.ID, p.Client); err != nil {
				return err
			}
		}
		if p.Scaler != nil {
			if err := tx.Put(bucketState, keyScaler, p.Scaler); err != nil {
				return err
			}
		}
		if p.Committee != nil {
			if err := tx.Put(bucketState, keyCommittee, p.Committee); err != nil {
				return err
			}
		}
		if p.Round != nil {
			r := p.Round
			if err := tx.Put(bucketRounds, fmt.Sprintf(roundKeyAttempt, ledger.RoundKey(r.Round), r.Attempt), r); err != nil {
				return err
			}
			if !r.Failed && r.Valuation != nil && !tx.HasReceiptsForRound(s.job, r.Round) {
				if _, err := tx.AppendReceipts(s.key, receiptsFor(s.job, r, time.Now())); err != nil {
					return err
				}
			}
			// A period's settlement is written with the record that carries
			// it, once: a step replayed after a crash finds it stored.
			if st := r.Settlement; st != nil && !tx.HasSettlement(s.job, st.Through) {
				if _, err := tx.AppendReceipts(s.key, settlementReceipts(s.job, r, time.Now())); err != nil {
					return err
				}
			}
		}
		if p.Global != nil {
			if err := tx.PutRaw(bucketState, keyGlobal, encodeFloats(p.Global)); err != nil {
				return err
			}
		}
		if p.Redundancy != nil {
			if err := tx.Put(bucketState, keyRedundancy, p.Redundancy); err != nil {
				return err
			}
		}
		if t := p.Transcript; t != nil {
			if err := tx.PutRaw(bucketTranscript, fmt.Sprintf(transcriptKey, t.Seq), t.Entry); err != nil {
				return err
			}
		}
		return nil
	})
}

// receiptsFor builds the unsigned receipts of a completed round, issued at
// now (the driver's clock: the engine keeps none).
func receiptsFor(job string, r *engine.RoundRecord, now time.Time) []ledger.Receipt {
	var dec []ledger.Decryption
	var head string
	if r.TranscriptHead != "" {
		// Under secure aggregation every decryption is in the transcript:
		// the receipts list its entries since the previous round's, and
		// only what the committee did not decrypt (updates valued in the
		// clear) from the record.
		head = r.TranscriptHead
		for _, d := range r.Transcript {
			dec = append(dec, ledger.Decryption{Purpose: d.Purpose, Contributors: d.Contributors, Seq: uint64(d.Seq),
				Round: d.Round, Attempt: d.Attempt, Request: d.Request, Status: d.Status, Gradient: d.Gradient})
		}
		for _, d := range r.Decryptions {
			if d.Purpose == "cleartext-update" {
				dec = append(dec, ledger.Decryption{Purpose: d.Purpose, Contributors: d.Contributors})
			}
		}
	} else {
		for _, d := range r.Decryptions {
			dec = append(dec, ledger.Decryption{Purpose: d.Purpose, Contributors: d.Contributors, Gradient: d.Gradient})
		}
	}
	rv := r.Valuation
	out := make([]ledger.Receipt, 0, len(r.Contributors))
	for _, id := range r.Contributors {
		var digest string
		if d, ok := r.Digests[id]; ok {
			digest = hex.EncodeToString(d[:])
		}
		out = append(out, ledger.Receipt{
			Job: job, Round: r.Round, Client: id, SubmissionDigest: digest, Decrypted: dec,
			Method: rv.Method, Mode: rv.Mode, Value: rv.Values[id], StdErr: rv.StdErr[id],
			Payout: rv.Payouts[id], Quota: rv.Quotas[id], Decay: decayOf(r), IssuedAt: now.UnixMilli(),
			DPEpsilon: r.DPEpsilon[id], DPDelta: r.DPDelta,
			TranscriptHead: head, TranscriptLen: uint64(r.TranscriptLen),
		})
	}
	return out
}

// decayOf is the job's decay as a receipt records it.
func decayOf(r *engine.RoundRecord) float64 {
	if r.Valuation != nil && r.Valuation.Decay > 0 {
		return r.Valuation.Decay
	}
	return 0
}

// settlementReceipts builds the unsigned receipts of a period's
// settlement, one per client valued in the period, in client order.
func settlementReceipts(job string, r *engine.RoundRecord, now time.Time) []ledger.Receipt {
	st := r.Settlement
	ids := make([]string, 0, len(st.Values))
	for id := range st.Values {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var method, mode string
	if r.Valuation != nil {
		method, mode = r.Valuation.Method, r.Valuation.Mode
	}
	out := make([]ledger.Receipt, 0, len(ids))
	for _, id := range ids {
		out = append(out, ledger.Receipt{
			Job: job, Round: st.Through, Client: id, Kind: ledger.KindSettlement, FromRound: st.From,
			Method: method, Mode: mode, Value: st.Values[id], Payout: st.Payouts[id], Quota: st.Quotas[id], Decay: st.Decay, IssuedAt: now.UnixMilli(),
		})
	}
	return out
}

// Load implements Store.
func (s *BoltStore) Load() (engine.Snapshot, error) {
	var snap engine.Snapshot
	err := s.db.View(func(tx *ledger.Tx) error {
		if err := tx.ForEach(bucketClients, func(_ string, v []byte) error {
			var c engine.ClientRecord
			if err := jsonUnmarshal(v, &c); err != nil {
				return err
			}
			snap.Clients = append(snap.Clients, c)
			return nil
		}); err != nil {
			return err
		}
		if err := tx.ForEach(bucketRounds, func(_ string, v []byte) error {
			var r engine.RoundRecord
			if err := jsonUnmarshal(v, &r); err != nil {
				return err
			}
			snap.Rounds = append(snap.Rounds, r)
			return nil
		}); err != nil {
			return err
		}
		raw, ok, err := tx.GetRaw(bucketState, keyGlobal)
		if err != nil {
			return err
		}
		if ok {
			if snap.Global, err = decodeFloats(raw); err != nil {
				return err
			}
		}
		var sc dataset.Scaler
		if ok, err := tx.Get(bucketState, keyScaler, &sc); err != nil {
			return err
		} else if ok {
			snap.Scaler = &sc
		}
		var cm engine.CommitteeRecord
		if ok, err := tx.Get(bucketState, keyCommittee, &cm); err != nil {
			return err
		} else if ok {
			snap.Committee = &cm
		}
		var rr engine.RedundancyRecord
		if ok, err := tx.Get(bucketState, keyRedundancy, &rr); err != nil {
			return fmt.Errorf("coordinator: state file %s: redundancy accumulator: %w", s.db.Path(), err)
		} else if ok {
			snap.Redundancy = &rr
		}
		return tx.ForEach(bucketTranscript, func(k string, v []byte) error {
			if want := fmt.Sprintf(transcriptKey, len(snap.Transcript)); k != want {
				return fmt.Errorf("coordinator: state file %s: transcript entry %q where %q belongs", s.db.Path(), k, want)
			}
			snap.Transcript = append(snap.Transcript, slices.Clone(v))
			return nil
		})
	})
	return snap, err
}

// Receipts returns the stored receipts of client with Seq > after.
func (s *BoltStore) Receipts(client string, after uint64) ([]ledger.Receipt, error) {
	rs, err := s.db.Receipts(ledger.Filter{Job: s.job, Client: client})
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(rs, func(r ledger.Receipt) bool { return r.Seq > after })
	if i < 0 {
		return nil, nil
	}
	return rs[i:], nil
}

func encodeFloats(v []float64) []byte {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(x))
	}
	return b
}

func decodeFloats(b []byte) ([]float64, error) {
	if len(b)%8 != 0 {
		return nil, fmt.Errorf("coordinator: stored model has %d bytes, not a whole number of float64", len(b))
	}
	v := make([]float64, len(b)/8)
	for i := range v {
		v[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return v, nil
}

// bucketAuth holds enrolments: "used/<token id>" counts a token's
// enrolments, "key/<client>" is a client's Binding.
const bucketAuth = "auth"

// Bind implements AuthStore, in one transaction.
func (s *BoltStore) Bind(tokenID string, uses int, b Binding) error {
	return s.db.Update(func(tx *ledger.Tx) error {
		var old Binding
		if ok, err := tx.Get(bucketAuth, "key/"+b.Client, &old); err != nil {
			return err
		} else if ok && old.Token == tokenID && old.Key.Equal(b.Key) {
			return nil
		}
		var used int
		if _, err := tx.Get(bucketAuth, "used/"+tokenID, &used); err != nil {
			return err
		}
		if used >= uses {
			return fmt.Errorf("%w: token %s admitted %d enrolment(s)", ErrTokenUsed, tokenID, uses)
		}
		if err := tx.Put(bucketAuth, "used/"+tokenID, used+1); err != nil {
			return err
		}
		return tx.Put(bucketAuth, "key/"+b.Client, b)
	})
}

// Bindings implements AuthStore.
func (s *BoltStore) Bindings() ([]Binding, error) {
	var out []Binding
	err := s.db.View(func(tx *ledger.Tx) error {
		return tx.ForEachPrefix(bucketAuth, "key/", func(k string, v []byte) error {
			var b Binding
			if err := jsonUnmarshal(v, &b); err != nil {
				return fmt.Errorf("coordinator: enrolment %s: %w", k, err)
			}
			if len(b.Key) != ed25519.PublicKeySize {
				return fmt.Errorf("coordinator: enrolment %s: key of %d bytes", k, len(b.Key))
			}
			out = append(out, b)
			return nil
		})
	})
	return out, err
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
