package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tallyfl/tally/client"
	"github.com/tallyfl/tally/coordinator"
	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/manifest"
	"github.com/tallyfl/tally/model"
)

func runData(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("data")
	fs.SetOutput(stderr)
	name := fs.String("dataset", "breast-cancer", "embedded dataset to split (without --csv)")
	csvFile := fs.String("csv", "", "write the job for this CSV file instead of an embedded dataset: its header and rows give the feature count and the class names")
	label := fs.String("label", "", "with --csv: the label column, by name or 0-based index (default: the last column)")
	classes := fs.String("classes", "", "with --csv: the class names in label order, comma-separated (default: the file's labels sorted, numbers numerically); every label of the file must be one of them")
	valFile := fs.String("validation", "", "with --csv: the coordinator's validation CSV (its label column is --label); without it, the CSV is split into client shards, validation.csv and test.csv")
	testFile := fs.String("test", "", "with --validation: the coordinator's test CSV (optional)")
	clients := fs.Int("clients", 3, "number of clients: enrolment entries and tokens, and client shards when the data is split")
	out := fs.String("out", "", "directory to write into (created if missing)")
	seed := fs.Uint64("seed", 1, "seed of the split and partition, and the job's seed")
	partition := fs.String("partition", "iid", "iid, dirichlet or size-skew")
	rounds := fs.Int("rounds", 10, "rounds in the generated job file")
	listen := fs.String("listen", "127.0.0.1:7070", "listen address in the generated job file")
	modelCommand := fs.String("model-command", "", "the job's model is external: the coordinator evaluates with this adapter command (clients then need --trainer)")
	scaling := fs.String("scaling", "federated", "feature scaling in the generated job file: federated or none")
	lr := fs.Float64("lr", 0.05, "the clients' learning rate in the generated job file")
	plaintext := fs.Bool("insecure-plaintext", false, "INSECURE: write a job with no manifest, TLS certificate or key files, for a coordinator and clients run with --insecure-plaintext (clients also with --insecure-no-manifest); for tests")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: tally data --out DIR [flags]
       tally data --csv FILE [--label COLUMN] [--classes a,b] [--validation V.csv [--test T.csv]] --out DIR [flags]

Writes a job file, job.yaml, for running a coordinator and clients as
separate processes, and one fresh single-use enrolment token per client,
issued as by tally token create: its hash in JOB_ID.tokens for the
coordinator, the token itself in tokens.txt (id, token, CSV file) to hand
out. It also writes what a real set-up needs, as the ML team and the data
holders would make it: a CA and the coordinator's TLS certificate (tls/),
the coordinator's receipt key (receipt.key), each client's identity key
(CLIENT.csv.key, as tally client keygen makes it), the ML team's owner key
(owner.key) and the job manifest signed with it (job.manifest.json), whose
fingerprint it prints. Clients find the manifest next to their CSV file.

Without --csv it writes an embedded dataset as CSV files: client-0.csv …
client-N.csv (one shard each), validation.csv and test.csv (the
coordinator's).

With --csv it reads your CSV file: the feature count, the label column
and the class names go into the job file (data.features, data.classes,
data.validation.label). The class names are the file's labels sorted
(numbers numerically), or --classes in the order given; the order is
printed: label k is class k in every file of the job, and clients map
their labels onto these names by name, so reorder them (with --classes,
or in job.yaml) before you hand the job out if you want another. Without
--validation the file is split as an embedded dataset is; with it, the
job names the given validation (and test) files and no shards are written.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	usageErr := func(msg string) error {
		fmt.Fprintln(stderr, msg)
		fs.Usage()
		return errUsage
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case *out == "":
		return usageErr("--out is required")
	case *csvFile != "" && set["dataset"]:
		return usageErr("--dataset and --csv are exclusive: give one")
	case *csvFile == "" && (set["label"] || set["classes"] || set["validation"] || set["test"]):
		return usageErr("--label, --classes, --validation and --test need --csv")
	case *testFile != "" && *valFile == "":
		return usageErr("--test needs --validation")
	case *clients < 1:
		return usageErr(fmt.Sprintf("--clients must be ≥ 1, got %d", *clients))
	}

	var ds *dataset.Dataset
	var order string
	if *csvFile == "" {
		var err error
		if ds, err = dataset.Embedded(*name); err != nil {
			return err
		}
	} else {
		table, err := dataset.LoadTable(*csvFile, dataset.CSVOptions{Label: *label})
		if err != nil {
			return err
		}
		var names []string
		order = "sorted; reorder them with --classes or in job.yaml"
		if *classes != "" {
			for _, c := range strings.Split(*classes, ",") {
				names = append(names, strings.TrimSpace(c))
			}
			order = "as given by --classes"
		}
		if ds, err = table.Label(names); err != nil {
			return err
		}
		*name = ds.Name
		if *label == "" {
			// Name the column, so the job file says which one it is.
			*label = table.LabelColumn()
		}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	write := func(file string, e model.Examples) error {
		f, err := os.Create(filepath.Join(*out, file))
		if err != nil {
			return err
		}
		d := &dataset.Dataset{Name: file, FeatureNames: ds.FeatureNames, ClassNames: ds.ClassNames, Examples: e}
		if err := dataset.WriteCSV(f, d); err != nil {
			f.Close()
			return fmt.Errorf("%s: %w", file, err)
		}
		return f.Close()
	}
	cfg := engine.JobConfig{
		ID: *name + "-job", Seed: *seed, Rounds: *rounds,
		Model: model.Spec{Kind: "logreg"},
		Train: model.TrainConfig{Epochs: 1, BatchSize: 16, LearningRate: *lr, Momentum: 0.9},
		Data: engine.DataConfig{Features: ds.Examples.Features, ClassNames: ds.ClassNames,
			Validation: engine.SourceConfig{CSV: "validation.csv"}, Test: engine.SourceConfig{CSV: "test.csv"}},
		Clients:           engine.ClientsConfig{Min: max(1, *clients-1), WaitFor: *clients},
		RoundTimeout:      engine.Duration(30 * time.Second),
		Scaling:           engine.ScalingConfig{Mode: *scaling},
		Listen:            *listen,
		SecureAggregation: "he",
	}
	if *modelCommand != "" {
		cfg.Model = model.Spec{Kind: model.KindExternal, Command: *modelCommand}
	}
	files := make([]string, *clients)
	if *valFile != "" {
		// The coordinator's own files, named relative to the job file
		// when they can be (paths in a job file resolve against it).
		cfg.Data.Validation = engine.SourceConfig{CSV: relTo(*out, *valFile), Label: *label}
		cfg.Data.Test = engine.SourceConfig{}
		if *testFile != "" {
			cfg.Data.Test = engine.SourceConfig{CSV: relTo(*out, *testFile), Label: *label}
		}
		for i := range files {
			files[i] = "-" // each client brings its own file
		}
	} else {
		fed, err := dataset.Federate(ds, dataset.FederationSpec{Clients: *clients, Partition: dataset.PartitionSpec{Kind: *partition}, ValFrac: 0.2, TestFrac: 0.2, Seed: *seed})
		if err != nil {
			return err
		}
		for i, c := range fed.Clients {
			files[i] = fmt.Sprintf("client-%d.csv", i)
			if err := write(files[i], c); err != nil {
				return err
			}
		}
		if err := write("validation.csv", fed.Validation); err != nil {
			return err
		}
		if err := write("test.csv", fed.Test); err != nil {
			return err
		}
	}
	for i := range *clients {
		cfg.Clients.Enrolment = append(cfg.Clients.Enrolment, engine.EnrolmentConfig{ID: fmt.Sprintf("client-%d", i)})
	}
	if !*plaintext {
		cfg.Manifest, cfg.ReceiptKey = "job.manifest.json", "receipt.key"
		cfg.TLSCert, cfg.TLSKey = filepath.Join("tls", "coordinator.pem"), filepath.Join("tls", "coordinator.key")
	}
	job, err := engine.NewJob(cfg, *out)
	if err != nil {
		return fmt.Errorf("the job file would be invalid: %w", err)
	}
	y, err := jobYAML(cfg)
	if err != nil {
		return err
	}
	// Fresh tokens: those of an earlier run in the same directory would be
	// bound already, in a state file of that run.
	if err := os.Remove(coordinator.TokensPath(job)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var tokens string
	for i, e := range cfg.Clients.Enrolment {
		tok, _, err := coordinator.CreateToken(coordinator.TokensPath(job), job, e.ID, 0, 1, time.Now())
		if err != nil {
			return err
		}
		tokens += fmt.Sprintf("%s %s %s\n", e.ID, tok, files[i])
	}
	if err := os.WriteFile(filepath.Join(*out, "job.yaml"), y, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*out, "tokens.txt"), []byte(tokens), 0o600); err != nil {
		return err
	}
	var pinned string
	if !*plaintext {
		if pinned, err = writeDataTrust(job, *out, *listen, files, stdout); err != nil {
			return err
		}
	}
	if *csvFile != "" {
		fmt.Fprintf(stdout, "%s: %d rows, %d features, label column %q\n", *csvFile, ds.Examples.Len(), ds.Examples.Features, *label)
		fmt.Fprintf(stdout, "classes (%s):\n", order)
		for k, c := range ds.ClassNames {
			fmt.Fprintf(stdout, "  %d %s\n", k, c)
		}
	}
	if *valFile != "" {
		fmt.Fprintf(stdout, "wrote job.yaml, %s and tokens.txt to %s\n", filepath.Base(coordinator.TokensPath(job)), *out)
	} else {
		fmt.Fprintf(stdout, "wrote %d client shards, validation.csv, test.csv, job.yaml, %s and tokens.txt to %s\n", *clients, filepath.Base(coordinator.TokensPath(job)), *out)
	}
	if pinned != "" {
		fmt.Fprint(stdout, pinned)
	}
	return nil
}

// relTo names path relative to dir when it can, else absolutely.
func relTo(dir, path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		return path
	}
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return abs
	}
	if r, err := filepath.Rel(absDir, abs); err == nil {
		return r
	}
	return abs
}

// jobYAML writes a job config with only the fields it sets: a zero value
// in a job file ("secure_aggregation: \"\"", "tick: 0s", "he_params:
// null") reads like a setting but only means "the default", which the
// coordinator fills in. Leaving a zero out changes nothing, since a
// missing field decodes as that same zero.
func jobYAML(cfg engine.JobConfig) ([]byte, error) {
	var n yaml.Node
	if err := n.Encode(cfg); err != nil {
		return nil, err
	}
	pruneZero(&n)
	return yaml.Marshal(&n)
}

// pruneZero removes the mapping entries whose value is a zero scalar, or a
// sequence or mapping left empty, recursively.
func pruneZero(n *yaml.Node) {
	if n.Kind == yaml.DocumentNode || n.Kind == yaml.SequenceNode {
		for _, c := range n.Content {
			pruneZero(c)
		}
		return
	}
	if n.Kind != yaml.MappingNode {
		return
	}
	kept := n.Content[:0]
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		pruneZero(v)
		if isZeroNode(v) {
			continue
		}
		kept = append(kept, k, v)
	}
	n.Content = kept
}

func isZeroNode(n *yaml.Node) bool {
	switch n.Kind {
	case yaml.MappingNode, yaml.SequenceNode:
		return len(n.Content) == 0
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return true
		case "!!str":
			return n.Value == "" || n.Value == "0s"
		case "!!int", "!!float":
			return n.Value == "0"
		case "!!bool":
			return n.Value == "false"
		}
	}
	return false
}

// writeDataTrust writes the trust material of a generated job: the
// coordinator's TLS certificate, the receipt key, one identity key per
// client (what each data holder's tally client keygen would make), the
// owner key and the signed manifest. It returns the lines to print.
func writeDataTrust(job engine.Job, out, listen string, files []string, stdout io.Writer) (string, error) {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		host = ""
	}
	if _, _, err := writePKI(filepath.Join(out, "tls"), []string{host}); err != nil {
		return "", err
	}
	var ps []manifest.Participant
	var keys []string
	for i, e := range job.Clients.Enrolment {
		path := filepath.Join(out, files[i]+".key")
		if files[i] == "-" {
			path = filepath.Join(out, e.ID+".key")
		}
		pub, err := client.KeyFilePublicKey(path)
		if err != nil {
			if pub, err = client.CreateKeyFile(path); err != nil {
				return "", err
			}
		}
		ps = append(ps, manifest.Participant{ID: e.ID, Key: manifest.HexBytes(pub)})
		keys = append(keys, filepath.Base(path))
	}
	owner, _, err := loadOrCreateKey(filepath.Join(out, "owner.key"))
	if err != nil {
		return "", err
	}
	m, _, err := writeJobManifest(job, owner, ps, nil)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("wrote tls/ (CA and coordinator certificate), receipt.key, owner.key, client keys %s and job.manifest.json\n"+
		"manifest sha256 %s (the data holders pin this, or the file)\n", strings.Join(keys, ", "), m.FingerprintHex()), nil
}
