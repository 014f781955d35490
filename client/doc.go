// Package client is a data holder's side of a tally job: it enrols with a
// token and an Ed25519 key it generates (Config.KeyFile keeps it), signs
// every later call with that key, long-polls the coordinator for tasks, trains locally on data that
// never leaves the process, and streams back model updates Δ = w_local − w
// in chunks with their SHA-256. It also answers the federated-scaling task
// with per-feature counts, sums and sums of squares of its data.
//
// Under secure aggregation it encrypts its update under the committee's
// collective key and signs, with the same Ed25519 key, a statement over
// the ciphertexts (job, round, attempt, key instance, weight, per block the
// SHA-256 of c₀ and c₁: aggregation.Submission) that travels with them.
// As a committee member it decrypts only what it has verified
// (aggregation.Member.VerifyAggregate): it fetches each contributor's
// signed statement and c₁ (Download "submission/<id>", and
// "contributions/<id>/<first>/<count>" for up to 8 blocks a call, or
// "contribution/<id>/<block>" from a coordinator without it) and, in the
// influence mode, the round's
// multiplier vector ("gradient", once per round), and refuses, telling the
// coordinator why, a ciphertext that is not the sum of its contributors'
// signed ciphertexts or not their product with the committed vector. With
// a manifest, every contributor must be a participant and sign with the
// key the manifest lists.
//
// The client survives a coordinator that goes away: transport failures are
// retried with exponential backoff; a client process that restarts resumes
// with its key instead of enrolling again (its token admitted one
// enrolment). It returns nil when the coordinator says the job is done.
//
// The model is the built-in one of the job's spec unless Config.NewModel
// builds another: `tally client --trainer` trains with an external
// model's adapter process (package extmodel). A client whose training
// fails (an adapter that crashed, hung or answered garbage, even after its
// restart) declines the task, saying why, so that the round closes with
// the other clients' updates instead of waiting for its deadline.
//
// Once a task is verified, and only then, the client's aggregation.Member
// admits it into the job's decryption transcript — the entries the
// coordinator hands it since its last head, then the request, with the c₁
// digests and the vector it verified, under the job-wide rules
// (aggregation/doc.go) — and persists the transcript
// beside its key file (KeyFile + ".transcript", written atomically and
// synced; a damaged file is an error naming it, never a fresh start)
// before any share leaves, so that a restarted client keeps what it took
// part in; its shares go back with its signature of the new head. Both
// checks pass or no share leaves. A round's influence scalars come as one
// task (batch.go, DecryptTask.coefficient_requests, wire version
// aggregation.CoefficientBatchVersion; another version is refused with
// ErrBatchVersion): every request is verified, the batch is admitted
// whole (aggregation.Member.AdmitBatch) and persisted, and one message
// carries a share of each request ("coefficients/<i>") and one signature
// of the batch's last head; a request that fails a check, or whose labels
// on the task disagree with it (ErrBatchLabels), refuses the whole batch. With the receipts it fetches the transcript's new entries and
// checks that they extend the chain it saw, carry valid signatures and
// pass the rules, and that every receipt's transcript head and listed
// decryptions are on that chain; otherwise it stops trusting the
// coordinator (ErrTranscriptHead).
//
// Local training randomness comes from a PRNG keyed by (job seed, client,
// round, attempt), so a job seed fixes the whole run.
package client
