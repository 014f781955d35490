package main

import (
	"context"
	"crypto/ed25519"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/tallyfl/tally/coordinator"
	"github.com/tallyfl/tally/ledger"
)

func runLedger(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "backup" {
		return runLedgerBackup(args[1:], stdout, stderr)
	}
	if len(args) == 0 || args[0] != "verify" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprint(stdout, ledgerUsage)
			return nil
		}
		fmt.Fprint(stderr, ledgerUsage)
		return errUsage
	}
	fs := newFlagSet("ledger verify")
	fs.SetOutput(stderr)
	db := fs.String("db", "", "a coordinator's state file (bbolt) to verify")
	receipts := fs.String("receipts", "", "a client's receipts file (JSON lines) to verify")
	client := fs.String("client", "", "with --receipts: the client id the receipts must name")
	pubHex := fs.String("public-key", "", "the coordinator's receipt-signing key (hex); required with --receipts, optional with --db (default: the key stored in the file)")
	fs.Usage = func() { fmt.Fprint(fs.Output(), ledgerUsage); fs.PrintDefaults() }
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	var pub ed25519.PublicKey
	if *pubHex != "" {
		var err error
		if pub, err = ledger.ParsePublicKey(*pubHex); err != nil {
			return err
		}
	}
	switch {
	case *db != "" && *receipts == "":
		// Open refuses a file that is empty, truncated or fails bbolt's
		// consistency check; Check adds a meta page that is invalid while
		// bbolt falls back to the other one.
		d, err := ledger.Open(*db, ledger.Options{ReadOnly: true})
		if err != nil {
			return err
		}
		defer d.Close()
		if err := d.Check(); err != nil {
			return err
		}
		if pub == nil {
			if pub, err = d.PublicKey(); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "using the public key stored in %s: %s (pass --public-key to check against the published one)\n", *db, ledger.FormatPublicKey(pub))
		}
		if err := d.VerifyWithKey(pub); err != nil {
			return fmt.Errorf("%s: %w", *db, err)
		}
		rs, err := d.Receipts(ledger.Filter{})
		if err != nil {
			return err
		}
		rounds := map[string]bool{}
		for _, r := range rs {
			rounds[fmt.Sprintf("%s/%d", r.Job, r.Round)] = true
		}
		fmt.Fprintf(stdout, "ledger %s verifies: file structure sound (bbolt consistency check), %d receipts over %d rounds, chain intact, every signature valid\n", *db, len(rs), len(rounds))
		tr, err := coordinator.VerifyTranscript(d)
		if err != nil {
			return err
		}
		if tr.Entries > 0 {
			fmt.Fprintf(stdout, "decryption transcript of job %s verifies: %d entries (%d signed by every participant, %d by none), chained from genesis to head %s, every signature valid under the member's enrolled key, the members' rules hold; the receipts list %d of them (%d decrypted, %d failed), each as the transcript has it\n",
				tr.Job, tr.Entries, tr.Signed, tr.Unsigned, tr.Head, tr.Receipted, tr.Decrypted, tr.Failed)
		}
		return nil
	case *receipts != "" && *db == "":
		if pub == nil || *client == "" {
			fmt.Fprintln(stderr, "--receipts needs --public-key and --client")
			return errUsage
		}
		f, err := os.Open(*receipts)
		if err != nil {
			return err
		}
		defer f.Close()
		rs, err := ledger.VerifyClientFile(f, pub, *client, nil)
		if err != nil {
			return fmt.Errorf("%s: %w", *receipts, err)
		}
		fmt.Fprintf(stdout, "receipts %s verify: %d receipts for client %s, each signed by %s\n", *receipts, len(rs), *client, ledger.FormatPublicKey(pub))
		return nil
	}
	fmt.Fprintln(stderr, "give either --db or --receipts")
	return errUsage
}

const ledgerUsage = `Usage: tally ledger verify (--db FILE [--public-key HEX] | --receipts FILE --public-key HEX --client ID)
       tally ledger backup --db FILE --out COPY

verify checks, offline, a coordinator's ledger or a client's own receipts:
for a state file, that it is whole (not empty or truncated, both meta
pages valid, bbolt's consistency check); then every receipt's hash and
Ed25519 signature, the hash chain, and (for a client's file) that each
receipt names the client. The first bad record is named. Under secure
aggregation a state file's decryption transcript is checked too: its
chain from genesis, every member's signature under its enrolled key, the
members' rules over the whole chain (no two sums of a round whose
contributors differ by fewer than k, one participant set per ciphertext,
one influence scalar per client and round), and that the receipts list
every decryption as the transcript has it.

backup writes a consistent copy of a state file that verifies to COPY
(replaced atomically) and checks the copy. It needs the file's lock: stop
the coordinator first, or run the coordinator with --backup, which writes
its own copy after every completed round.

`

func runLedgerBackup(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("ledger backup")
	fs.SetOutput(stderr)
	db := fs.String("db", "", "the coordinator's state file (bbolt) to copy; the coordinator must not be running")
	out := fs.String("out", "", "the copy to write (replaced atomically if it exists)")
	fs.Usage = func() { fmt.Fprint(fs.Output(), ledgerUsage); fs.PrintDefaults() }
	if err := parse(fs, args); err != nil {
		return err
	}
	if *db == "" || *out == "" {
		fmt.Fprintln(stderr, "--db and --out are required")
		return errUsage
	}
	d, err := ledger.Open(*db, ledger.Options{ReadOnly: true})
	if err != nil {
		return err
	}
	defer d.Close()
	// A copy of a broken ledger is no backup: refuse it, as verify would.
	if err := d.Check(); err != nil {
		return err
	}
	if err := d.Verify(); err != nil && !errors.Is(err, ledger.ErrNoKey) {
		return fmt.Errorf("%s: %w", *db, err)
	}
	n, err := d.Backup(*out)
	if err != nil {
		return err
	}
	c, err := ledger.Open(*out, ledger.Options{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("the copy does not open: %w", err)
	}
	defer c.Close()
	if err := c.Check(); err != nil {
		return fmt.Errorf("the copy: %w", err)
	}
	rs, err := c.Receipts(ledger.Filter{})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "backup of %s written to %s: %d bytes, %d receipts; restore it by copying it over the state file while the coordinator is stopped\n", *db, *out, n, len(rs))
	return nil
}

func readLedger(path string) ([]ledger.Receipt, error) {
	d, err := ledger.Open(path, ledger.Options{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Receipts(ledger.Filter{})
}

func runScores(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("scores")
	fs.SetOutput(stderr)
	db := fs.String("db", "", "a coordinator's state file")
	format := fs.String("format", "table", "table, csv or json")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: tally scores --db FILE [--format table|csv|json]\n\nPrints each client's contribution from the signed receipts, totalled as the coordinator\ntotals it: each round's values credited (a round whose values sum to ≤ 0 credits nobody)\nand summed with the job's decay recorded in the receipts (standard errors in quadrature),\na settled period counted by its settlement's total (the one it was paid on, copies valued\nas one), rank, payouts summed (rounds' baselines and settlements), quota credits summed.\n\n")
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if *db == "" {
		fmt.Fprintln(stderr, "--db is required")
		return errUsage
	}
	rs, err := readLedger(*db)
	if err != nil {
		return err
	}
	rows := ledger.Standings(rs)
	header := []string{"client", "rounds", "value", "stderr", "rank", "payout", "quota"}
	cells := func(s ledger.Standing) []string {
		return []string{s.Client, strconv.Itoa(s.Rounds), fmtF(s.Value), fmtF(s.StdErr), strconv.Itoa(s.Rank), fmtF(s.Payout), fmtF(s.Quota)}
	}
	return writeTable(stdout, *format, header, rows, cells)
}

func runPayouts(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("payouts")
	fs.SetOutput(stderr)
	db := fs.String("db", "", "a coordinator's state file")
	format := fs.String("format", "table", "table, csv or json")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: tally payouts --db FILE [--format table|csv|json]\n\nPrints every (round, client) payout and quota credit from the signed receipts; a period's\nsettlement (kind settlement, rounds from … round) pays the value part.\n\n")
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if *db == "" {
		fmt.Fprintln(stderr, "--db is required")
		return errUsage
	}
	rs, err := readLedger(*db)
	if err != nil {
		return err
	}
	type row struct {
		Round  int    `json:"round"`
		Client string `json:"client"`
		// Kind is "round" or "settlement" (of rounds From … Round).
		Kind   string  `json:"kind"`
		From   int     `json:"from,omitempty"`
		Value  float64 `json:"value"`
		Payout float64 `json:"payout"`
		Quota  float64 `json:"quota"`
		Seq    uint64  `json:"seq"`
	}
	rows := make([]row, len(rs))
	for i, r := range rs {
		rows[i] = row{Round: r.Round, Client: r.Client, Kind: "round", Value: r.Value, Payout: r.Payout, Quota: r.Quota, Seq: r.Seq}
		if r.Kind != "" {
			rows[i].Kind, rows[i].From = r.Kind, r.FromRound
		}
	}
	return writeTable(stdout, *format, []string{"round", "client", "kind", "from", "value", "payout", "quota", "seq"}, rows, func(r row) []string {
		from := ""
		if r.From > 0 {
			from = strconv.Itoa(r.From)
		}
		return []string{strconv.Itoa(r.Round), r.Client, r.Kind, from, fmtF(r.Value), fmtF(r.Payout), fmtF(r.Quota), strconv.FormatUint(r.Seq, 10)}
	})
}

func fmtF(v float64) string { return strconv.FormatFloat(v, 'f', 6, 64) }

// writeTable prints rows as an aligned table, CSV or JSON.
func writeTable[T any](w io.Writer, format string, header []string, rows []T, cells func(T) []string) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	case "csv":
		cw := csv.NewWriter(w)
		if err := cw.Write(header); err != nil {
			return err
		}
		for _, r := range rows {
			if err := cw.Write(cells(r)); err != nil {
				return err
			}
		}
		cw.Flush()
		return cw.Error()
	case "table":
		all := [][]string{header}
		for _, r := range rows {
			all = append(all, cells(r))
		}
		width := make([]int, len(header))
		for _, r := range all {
			for i, c := range r {
				width[i] = max(width[i], len(c))
			}
		}
		for _, r := range all {
			for i, c := range r {
				if i > 0 {
					fmt.Fprint(w, "  ")
				}
				fmt.Fprintf(w, "%-*s", width[i], c)
			}
			fmt.Fprintln(w)
		}
		return nil
	}
	return fmt.Errorf("--format must be table, csv or json, got %q", format)
}
