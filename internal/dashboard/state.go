package dashboard

import (
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/tallyfl/tally/coordinator"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/ledger"
)

// State is what the coordinator dashboard shows, as /api/state serves it.
// It holds what JobStatus shows and what the operator's ledger holds
// (values, payouts), never a client's update, submission digest, keys,
// tokens or network address (see doc.go).
type State struct {
	Job JobInfo `json:"job"`
	// Source is "live" (a running coordinator) or "state file".
	Source  string    `json:"source"`
	Phase   string    `json:"phase"`
	Round   int       `json:"round"`
	Done    *Done     `json:"done,omitempty"`
	Updated time.Time `json:"updated"`
	// Task is the open task, nil when none is (or from a state file).
	Task   *Task   `json:"task,omitempty"`
	Rounds []Round `json:"rounds"`
	// Clients are the job's clients, sorted by id.
	Clients []Client `json:"clients"`
	// Contributions is the table `tally scores` prints, from the signed
	// receipts when there is a ledger ("signed receipts"), else from the
	// round records the receipts would be made of ("round records").
	Contributions     []ledger.Standing `json:"contributions"`
	ContributionsFrom string            `json:"contributions_from"`
	Decryptions       []Decryption      `json:"decryptions"`
	Keys              Keys              `json:"keys"`
	MetricsURL        string            `json:"metrics_url,omitempty"`
}

// JobInfo is the part of the job file the page shows. Fields of a job
// known only from its state file are zero.
type JobInfo struct {
	ID                 string  `json:"id"`
	Rounds             int     `json:"rounds,omitempty"`
	SecureAggregation  string  `json:"secure_aggregation,omitempty"`
	CommitteeSize      int     `json:"committee_size,omitempty"`
	CommitteeThreshold int     `json:"committee_threshold,omitempty"`
	MinGroupSize       int     `json:"min_group_size,omitempty"`
	ValuationMode      string  `json:"valuation_mode,omitempty"`
	ValuationMethod    string  `json:"valuation_method,omitempty"`
	Utility            string  `json:"utility,omitempty"`
	BudgetPerRound     float64 `json:"budget_per_round,omitempty"`
	// Budget is the job's (or with PeriodRounds each period's) budget.
	Budget       float64 `json:"budget,omitempty"`
	PeriodRounds int     `json:"period_rounds,omitempty"`
	// LivenessSeconds is how recently a client must have called to count
	// as live.
	LivenessSeconds float64 `json:"liveness_seconds,omitempty"`
}

// Done says why the job ended.
type Done struct {
	Reason     string `json:"reason"`
	FinalRound int    `json:"final_round"`
}

// Task is the open task.
type Task struct {
	ID        string `json:"id"`
	Kind      string `json:"kind"`
	Round     int    `json:"round"`
	Selected  int    `json:"selected"`
	Submitted int    `json:"submitted"`
}

// Round is one round attempt. Finished rounds (Failed false) are the
// points of the charts.
type Round struct {
	Round        int     `json:"round"`
	Attempt      int     `json:"attempt"`
	Failed       bool    `json:"failed,omitempty"`
	Reason       string  `json:"reason,omitempty"`
	ValLoss      float64 `json:"val_loss"`
	ValAccuracy  float64 `json:"val_accuracy"`
	Selected     int     `json:"selected"`
	Contributors int     `json:"contributors"`
	// Dropped are the selected clients that did not contribute.
	Dropped []string `json:"dropped,omitempty"`
	// Values and Payouts are each contributor's for this round.
	Values  map[string]float64 `json:"values,omitempty"`
	Payouts map[string]float64 `json:"payouts,omitempty"`
}

// Client is one client's standing in the job.
type Client struct {
	ID string `json:"id"`
	// Enrolled is false for a client of the job file that never joined.
	Enrolled bool  `json:"enrolled"`
	Samples  int64 `json:"samples"`
	// Live is nil when unknown (a state file): otherwise whether the
	// client called within the job's liveness window; LastSeenSeconds is
	// how long ago it last called, when it has in this process.
	Live            *bool    `json:"live,omitempty"`
	LastSeenSeconds *float64 `json:"last_seen_seconds,omitempty"`
	// Selected and Submitted refer to the open task.
	Selected  bool `json:"selected"`
	Submitted bool `json:"submitted"`
	// Committee: a member of the latest decryption committee.
	Committee bool `json:"committee"`
	// Dropped: selected in the latest round attempt but did not contribute.
	Dropped           bool `json:"dropped"`
	RoundsContributed int  `json:"rounds_contributed"`
}

// Decryption is one entry of the decryption audit. Participants are the
// committee members whose shares decrypted it; none means the coordinator
// saw it in the clear (valuation mode plain), not a decryption.
type Decryption struct {
	Round        int      `json:"round"`
	Attempt      int      `json:"attempt"`
	Purpose      string   `json:"purpose"`
	Contributors int      `json:"contributors"`
	Participants []string `json:"participants"`
}

// Keys are the key generations: the latest committee, and each
// generation the dashboard saw start (a running coordinator) or the
// latest one a state file keeps.
type Keys struct {
	Epochs      int             `json:"epochs"`
	Committee   []string        `json:"committee"`
	Generations []KeyGeneration `json:"generations"`
	Note        string          `json:"note,omitempty"`
}

// KeyGeneration is one collective key generation: its epoch, its
// committee and the round it served first.
type KeyGeneration struct {
	Epoch     int      `json:"epoch"`
	Committee []string `json:"committee"`
	Round     int      `json:"round"`
	KeyID     string   `json:"key_id,omitempty"`
}

// jobInfo is what the page shows of a job file.
func jobInfo(job engine.Job) JobInfo {
	return JobInfo{
		ID: job.ID, Rounds: job.Rounds, SecureAggregation: job.SecureAggregation,
		CommitteeSize: job.Committee.Size, CommitteeThreshold: job.Committee.Threshold, MinGroupSize: job.MinGroupSize,
		ValuationMode: job.Valuation.Mode, ValuationMethod: job.Valuation.Method, Utility: job.Valuation.Utility,
		BudgetPerRound: job.Payment.BudgetPerRound, Budget: job.Payment.BudgetFor(job.Rounds), PeriodRounds: job.Payment.PeriodRounds, LivenessSeconds: time.Duration(job.Clients.Liveness).Seconds(),
	}
}

// view is everything a State is built from.
type view struct {
	info     JobInfo
	enrolled []string // the job file's clients, if known
	status   coordinator.Status
	activity coordinator.Activity
	// receipts are the ledger's receipts of the job; nil without a ledger.
	receipts []ledger.Receipt
	// lastSeen maps a client to its last authenticated call; nil when
	// unknown.
	lastSeen map[string]time.Time
	liveness time.Duration
	now      time.Time
}

// build assembles the page's state.
func build(v view) State {
	st := v.status
	s := State{Job: v.info, Phase: st.Phase.String(), Round: st.Round, Updated: v.now.UTC(),
		Rounds: []Round{}, Clients: []Client{}, Decryptions: []Decryption{}}
	if st.Done != nil {
		s.Done = &Done{Reason: st.Done.Reason, FinalRound: st.Done.FinalRound}
	}
	if a := v.activity; a.Task != "" {
		s.Task = &Task{ID: a.Task, Kind: a.Kind, Round: a.Round, Selected: len(a.Selected), Submitted: len(a.Submitted)}
	}
	contributed := map[string]int{}
	var last *engine.RoundRecord
	var fromHistory []ledger.Receipt
	for i := range st.History {
		r := &st.History[i]
		last = r
		out := Round{Round: r.Round, Attempt: r.Attempt, Failed: r.Failed, Reason: r.Reason, ValLoss: r.ValLoss, ValAccuracy: r.ValAccuracy,
			Selected: len(r.Selected), Contributors: len(r.Contributors), Dropped: dropped(r)}
		if !r.Failed {
			for _, c := range r.Contributors {
				contributed[c]++
			}
			if rv := r.Valuation; rv != nil {
				out.Values, out.Payouts = map[string]float64{}, map[string]float64{}
				// The receipts a BoltStore signs for this round hold
				// exactly these fields (coordinator.receiptsFor).
				for _, c := range r.Contributors {
					out.Values[c], out.Payouts[c] = rv.Values[c], rv.Payouts[c]
					fromHistory = append(fromHistory, ledger.Receipt{Round: r.Round, Client: c,
						Value: rv.Values[c], StdErr: rv.StdErr[c], Payout: rv.Payouts[c], Quota: rv.Quotas[c], Decay: rv.Decay})
				}
			}
		}
		// A period's settlement pays the value part (coordinator.settlementReceipts).
		if st := r.Settlement; st != nil {
			for c, p := range st.Payouts {
				fromHistory = append(fromHistory, ledger.Receipt{Round: st.Through, Client: c, Kind: ledger.KindSettlement,
					FromRound: st.From, Value: st.Values[c], Payout: p, Quota: st.Quotas[c], Decay: st.Decay})
			}
		}
		s.Rounds = append(s.Rounds, out)
		for _, d := range r.Decryptions {
			s.Decryptions = append(s.Decryptions, Decryption{Round: r.Round, Attempt: r.Attempt, Purpose: d.Purpose,
				Contributors: d.Contributors, Participants: nonNil(d.Participants)})
		}
	}
	if v.receipts != nil {
		s.Contributions, s.ContributionsFrom = ledger.Standings(v.receipts), "signed receipts"
	} else {
		s.Contributions, s.ContributionsFrom = ledger.Standings(fromHistory), "round records"
	}

	ids := slices.Clone(v.enrolled)
	for id := range st.Clients {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	ids = slices.Compact(ids)
	selected, submitted, committee := set(v.activity.Selected), set(v.activity.Submitted), set(st.Committee)
	var droppedLast map[string]bool
	if last != nil {
		droppedLast = set(dropped(last))
	}
	for _, id := range ids {
		n, ok := st.Clients[id]
		c := Client{ID: id, Enrolled: ok, Samples: n, Selected: selected[id], Submitted: submitted[id], Committee: committee[id],
			Dropped: droppedLast[id], RoundsContributed: contributed[id]}
		if v.lastSeen != nil {
			t, seen := v.lastSeen[id]
			live := seen && v.now.Sub(t) <= v.liveness
			c.Live = &live
			if seen {
				ago := v.now.Sub(t).Seconds()
				c.LastSeenSeconds = &ago
			}
		}
		s.Clients = append(s.Clients, c)
	}
	s.Keys = Keys{Epochs: st.Epochs, Committee: nonNil(slices.Clone(st.Committee)), Generations: []KeyGeneration{}}
	return s
}

// dropped lists the clients a round selected that did not contribute.
func dropped(r *engine.RoundRecord) []string {
	in := set(r.Contributors)
	var out []string
	for _, id := range r.Selected {
		if !in[id] {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

func set(ids []string) map[string]bool {
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// keyID formats the first bytes of a key's ID as the logs print it.
func keyID(id [32]byte) string { return fmt.Sprintf("%x", id[:8]) }
