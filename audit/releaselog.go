package audit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/model"
)

// A release log is the coordinator's own record of every plaintext it
// obtained from a decryption (engine.ActRelease), kept by `tally
// coordinator --release-log` and `tally simulate --release-log`: what the
// threat model's honest-but-curious coordinator holds after a job, which
// `tally audit job` checks against the job's decryption transcript and
// attacks.
//
// The file is JSON lines, append-only: a header line, then one line per
// release, each line `JSON<TAB>SHA-256(JSON) in hex`. A record is written
// and fsynced before the driver goes on, so a crash loses at most the
// release being written; a last line without its newline is such a torn
// write, dropped when the log is reopened (and reported when it is read).
// A line whose checksum does not match is an error naming the line.

// ReleaseLogHeader is the first line of a release log: the job and what an
// attacker needs to redo the clients' training (model, local training).
type ReleaseLogHeader struct {
	Job string `json:"job"`
	// Source is "coordinator" or "simulate".
	Source   string            `json:"source"`
	Seed     uint64            `json:"seed"`
	Model    model.Spec        `json:"model"`
	Train    model.TrainConfig `json:"train"`
	Features int               `json:"features"`
	Classes  int               `json:"classes"`
	// Simulation is how a simulate job dealt its data, from which the
	// audit re-derives every shard (its similarity metrics need the
	// truth); nil for a coordinator's job.
	Simulation *SimulationSpec `json:"simulation,omitempty"`
	// Valuation is the job's valuation settings: the projection mode's
	// public vectors depend on them (step, utility), and tally audit job
	// rebuilds those vectors to hold each scalar to the vector digest its
	// transcript entry commits to. Absent from logs written before it.
	Valuation *engine.ValuationConfig `json:"valuation,omitempty"`
}

// SimulationSpec is the data side of a `tally simulate` job: dataset.Federate
// of Dataset with these settings gives the clients' shards, in the order
// of Clients (client IDs).
type SimulationSpec struct {
	Dataset   string         `json:"dataset"`
	Clients   []string       `json:"clients"`
	Partition string         `json:"partition"`
	Alpha     float64        `json:"alpha,omitempty"`
	ValFrac   float64        `json:"val_frac"`
	TestFrac  float64        `json:"test_frac"`
	Corrupt   map[int]string `json:"corrupt,omitempty"`
}

type logLine struct {
	Header  *ReleaseLogHeader `json:"header,omitempty"`
	Release *engine.Release   `json:"release,omitempty"`
}

// ReleaseLog appends releases to a log file. Safe for concurrent use.
type ReleaseLog struct {
	mu sync.Mutex
	f  *os.File
}

// ErrReleaseLog marks a release log that cannot be read or continued.
var ErrReleaseLog = errors.New("audit: release log")

// OpenReleaseLog opens path for appending, creating it with header h, or
// continuing a log of the same job (a restarted coordinator): a torn last
// line is cut off first. A log of another job is refused.
func OpenReleaseLog(path string, h ReleaseLogHeader) (*ReleaseLog, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*ReleaseLog, error) {
		f.Close()
		return nil, err
	}
	old, _, good, err := readLog(f)
	if err != nil {
		return fail(fmt.Errorf("%s: %w", path, err))
	}
	if old != nil && old.Job != h.Job {
		return fail(fmt.Errorf("%w: %s is the release log of job %q, not of %q", ErrReleaseLog, path, old.Job, h.Job))
	}
	if err := f.Truncate(good); err != nil {
		return fail(err)
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		return fail(err)
	}
	l := &ReleaseLog{f: f}
	if old == nil {
		if err := l.write(logLine{Header: &h}); err != nil {
			return fail(err)
		}
	}
	return l, nil
}

// Append writes r and syncs it to disk.
func (l *ReleaseLog) Append(r engine.Release) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.write(logLine{Release: &r})
}

func (l *ReleaseLog) write(line logLine) error {
	b, err := json.Marshal(line)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(b)
	b = append(b, '\t')
	b = hex.AppendEncode(b, sum[:])
	b = append(b, '\n')
	if _, err := l.f.Write(b); err != nil {
		return err
	}
	return l.f.Sync()
}

// Close closes the file.
func (l *ReleaseLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}

// LogContents is a release log as read: its header, its releases in
// order, and whether its last line was torn (a write a crash cut short).
type LogContents struct {
	Header   ReleaseLogHeader
	Releases []engine.Release
	Torn     bool
}

// ReadReleaseLog reads a whole release log.
func ReadReleaseLog(path string) (*LogContents, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h, rs, good, err := readLog(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if h == nil {
		return nil, fmt.Errorf("%w: %s is empty", ErrReleaseLog, path)
	}
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return &LogContents{Header: *h, Releases: rs, Torn: st.Size() > good}, nil
}

// readLog reads f from its start: the header (nil for an empty file), the
// releases, and the offset after the last whole line.
func readLog(f *os.File) (*ReleaseLogHeader, []engine.Release, int64, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, nil, 0, err
	}
	r := bufio.NewReaderSize(f, 1<<20)
	var h *ReleaseLogHeader
	var rs []engine.Release
	var good int64
	for n := 1; ; n++ {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			return h, rs, good, nil // a torn last line, if any, is ignored
		}
		if err != nil {
			return nil, nil, 0, err
		}
		body, sum, ok := bytes.Cut(bytes.TrimSuffix(line, []byte("\n")), []byte("\t"))
		want := sha256.Sum256(body)
		if !ok || hex.EncodeToString(want[:]) != string(sum) {
			return nil, nil, 0, fmt.Errorf("%w: line %d: checksum does not match its record", ErrReleaseLog, n)
		}
		var ll logLine
		if err := json.Unmarshal(body, &ll); err != nil {
			return nil, nil, 0, fmt.Errorf("%w: line %d: %v", ErrReleaseLog, n, err)
		}
		switch {
		case n == 1 && ll.Header != nil:
			h = ll.Header
		case n > 1 && ll.Release != nil:
			rs = append(rs, *ll.Release)
		default:
			return nil, nil, 0, fmt.Errorf("%w: line %d: want a %s", ErrReleaseLog, n, map[bool]string{true: "header", false: "release"}[n == 1])
		}
		good += int64(len(line))
	}
}
