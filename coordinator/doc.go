// Package coordinator runs a federated-learning job: it admits enrolled
// clients, sends them training tasks round after round, aggregates their
// updates into the global model and evaluates it on the coordinator's own
// validation data.
//
// The design follows etcd-io/raft's split of a pure core from its I/O. The
// core, the round engine, is package engine: events in, actions out, no
// clock, I/O or global randomness; its trace tests and goldens live there.
// This package is the I/O around it:
//
//   - Driver owns an engine.Engine, feeds it ticks from a clock and events
//     from the gRPC Service, and performs the actions in order. Every
//     ActPersist is written to the Store before any later action, so nobody
//     is told of a state change that a crash could lose. The engine's
//     ActLog actions are logged here.
//   - Service is the gRPC API (proto/tally/v1): enrolment with a token,
//     long-polled tasks, chunked digest-checked submissions (and declines,
//     service_decline.go), the open Schema call, and job status. Errors map
//     to status codes in one place (toStatus); refusal logs are rate-limited
//     (lograte.go).
//   - Server assembles a job: engine, driver, service, the Evaluator
//     (ModelEvaluator) and the engine's Valuer (ModelValuer, valuer.go, which
//     measures the wall time of a valuation), and exposes the dashboard's
//     read-only view (dashboard.go).
//   - LoadJob (jobfile.go) reads and validates a job file into an
//     engine.Job. BoltStore (store_bolt.go) is the bbolt state file;
//     OpenJobStore (jobstate.go) records the job's identity in it and
//     refuses a changed job. MemoryStore (memstore.go) is the engine's
//     in-memory store with the enrolments beside it, for tests and
//     simulations.
//
// Clients enrol with a token (issued by CreateToken, stored as a hash in
// the job's tokens file, single-use by default), binding an Ed25519 key
// they generated; every later call is signed with that key and checked by
// the service's interceptors (auth.go, package internal/auth), and the
// bindings live in the store, so a restarted coordinator keeps admitting
// the clients it enrolled. ServerConfig.TLS adds TLS and, with client CAs,
// mutual TLS.
//
// Under secure aggregation each round keeps every contributor's signed
// c₁ rows (half of its ciphertext) for the committee members who verify
// the sums they decrypt. They are kept in a spill file (spill.go,
// aggregation.NewSpillingSubmissionStore) in ServerConfig.SpillDir, by
// default os.TempDir(): removed from the directory as soon as it is made,
// checked with a CRC-32C when read back, and closed by the driver once
// the round's decryptions are over, so that the coordinator's heap does
// not grow with the clients by 1.6 MB each at 100k parameters.
//
// Edge aggregators (package edge, edge.go): the job's edges list names
// each edge and the Ed25519 key its own calls (EdgeTask, EdgeSubmit) are
// signed with, checked against that list alone. An edge relays its
// clients' calls under their own signatures; its partial is taken only
// when every client it names is selected for the open task and has a
// signed statement that verifies under its enrolled key, and every part is
// there and well formed. Each client is then counted as if it had
// uploaded: receipts name every client.
package coordinator
