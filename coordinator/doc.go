// Package coordinator runs a federated-learning job: it admits enrolled
// clients, sends them training tasks round after round, aggregates their
// updates into the global model and evaluates it on the coordinator's own
// validation data.
//
// The design follows etcd-io/raft's split of a pure core from its I/O:
//
//   - Engine is a deterministic state machine. Step takes one Event (a
//     client joined, polled or submitted; a tick passed) and returns the
//     Actions to perform (persist, publish a task, reply, report a round,
//     end the job). It reads no clock, does no I/O and draws randomness only
//     from a PRNG keyed by (job seed, purpose, round, attempt), so the same
//     events give the same actions, byte for byte. Trace tests under
//     testdata/trace drive it with scripts and compare golden files.
//   - Driver owns an Engine, feeds it ticks from a clock and events from the
//     gRPC Service, and performs the actions in order. Every ActPersist is
//     written to the Store before any later action, so nobody is told of a
//     state change that a crash could lose.
//   - Service is the gRPC API (proto/tally/v1): enrolment with a token,
//     long-polled tasks, chunked digest-checked submissions, and job status.
//     Errors map to status codes in one place (toStatus).
//
// Time is counted in ticks: a round's deadline is a number of ticks, so a
// client that never answers is handled by feeding ticks, and tests never
// sleep. Rounds that close with fewer than clients.min updates fail cleanly
// and are retried or stop the job, as the job file says; so does a round
// that finds too few clients to start for a whole round timeout. A client
// that lets a task's deadline pass, whose long poll is cut off by its
// connection closing, or that is not heard from for longer than the
// longest poll gap when a task times out, is presumed gone until it is
// heard from again: it is neither selected nor asked to decrypt, so a dead
// committee member costs at most the one timeout in which it fell silent.
//
// Clients enrol with a token (issued by CreateToken, stored as a hash in
// the job's tokens file, single-use by default), binding an Ed25519 key
// they generated; every later call is signed with that key and checked by
// the service's interceptors (auth.go, package internal/auth), and the
// bindings live in the store, so a restarted coordinator keeps admitting
// the clients it enrolled. ServerConfig.TLS adds TLS and, with client CAs,
// mutual TLS.
//
// FedAvg follows McMahan et al., "Communication-Efficient Learning of Deep
// Networks from Decentralized Data", AISTATS 2017.
package coordinator
