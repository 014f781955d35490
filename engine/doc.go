// Package engine is the round engine of a federated-learning job: a
// deterministic state machine that the coordinator's driver feeds events
// and whose actions it performs. It follows etcd-io/raft's split of a pure
// core from its I/O (docs/DESIGN.md §2, docs/STYLE.md §1).
//
// Engine.Step takes one Event (a client joined, polled, submitted,
// declined or left; a committee member sent shares; a tick passed) and
// returns the Actions to perform (persist, publish a task, reply, report a
// round, end the job, log, and report each plaintext a decryption gave the
// coordinator, keyed to its transcript entry: ActRelease, which a driver
// may keep for package audit). It reads no clock, does no I/O and draws
// randomness only from a PRNG keyed by (job seed, purpose, round,
// attempt), so the same events give the same actions, byte for byte, and
// a crash can be replayed. Time is counted in ticks: a round's deadline is
// a number of ticks, so a client that never answers is handled by feeding
// ticks, and tests never sleep. Trace tests under testdata/trace drive it
// with scripts and compare golden files.
//
// Rounds that close with fewer than clients.min updates fail cleanly and
// are retried or stop the job, as the job file says; so does a round that
// finds too few clients to start for a whole round timeout. A client that
// lets a task's deadline pass, whose long poll is cut off by its
// connection closing (EvLeft), or that is not heard from for longer than
// the longest poll gap when a task times out, is presumed gone until it is
// heard from again: it is neither selected nor asked to decrypt, so a dead
// committee member costs at most the one timeout in which it fell silent.
//
// Purity is enforced by the build: TestEnginePurity fails if a non-test
// file of this package imports net, os, log (log/slog included), gRPC,
// bbolt, OpenTelemetry, Prometheus, internal/auth or a package above it
// (coordinator, client, cmd), calls the clock (time.Now, Since, timers,
// Sleep) or the global random generator, starts a goroutine, or if any
// package its imports reach is gRPC, bbolt or telemetry. What it takes
// from this module is pure computation: aggregation, dataset, model,
// valuation and ledger/payout (the payout arithmetic, not the bbolt
// store). The injected Evaluator and Valuer are the coordinator's.
//
// A projection round (valuation.mode projection, projection.go) has two
// decryption phases: the round's total first; then, from it, the public
// vectors (the total, validation gradients along its line, per-class
// gradient parts: valuation.ProjectionVectors), each client's product with
// each of them computed homomorphically from the ciphertexts the
// coordinator kept (Task.Kept, in the round's spill file when there is
// one), and one coefficient decryption item per
// (client, vector), committed to that vector, which members verify
// against the client's signed ciphertexts as they do an influence scalar.
// The job declares the count (valuation.scalars_per_round) and the
// transcript holds every round to it.
//
// What lives here: the events and actions (events.go); Step and the
// plaintext round (engine.go); enrolment, liveness and the start of a
// round (clients.go); client selection and FedAvg (strategy.go); the
// engine's side of multiparty CKKS aggregation, committee key generation
// (secure.go) and threshold decryption (decrypt.go: a whole aggregate per
// task, retried re-randomised; a round's influence scalars in one batch
// task, each combined from any t answers and never retried); the valuation step
// and payouts (valuation.go); a client declining its task (decline.go);
// the decryption audit (privacy.go); differential privacy's noise
// multiplier and per-client ε (dp.go); the job's config types and their
// validation (config.go); and the Store interface with its in-memory
// implementation (store.go). Reading job files, the gRPC service, the
// bbolt store, enrolments, clocks and logging are package coordinator's.
//
// Differential privacy (privacy.dp, dp.go) is distributed: each client
// clips its contribution n_i·Δ_i to L2 norm C and adds N(0, σ²C²/m) to
// every coordinate before it encrypts, m being the fewest updates in any
// sum the job releases (clients.min, and under "he" at most
// min_group_size), so every released sum carries noise of at least σ·C
// and one client changes it by at most C. When the coordinator learns
// something of one client alone, m is 1 and each client adds all of σ·C:
// under "none" (it sees each update) and under the "influence",
// "projection" or "plain" valuation (each influence scalar is computed from one client's
// update, so it is post-processing of that noised update, covered at the
// same ε with no separate mechanism, but only because that update
// carries σ·C by itself). σ is the smallest the RDP accountant allows
// for (ε, δ) over the job's rounds, each counted as a full Gaussian
// mechanism: selection comes from the job seed and the coordinator knows
// who submitted, so no amplification by subsampling is claimed. Since
// σ depends on the rounds, the coordinator refuses to raise a DP job's
// rounds once a round has run (coordinator.ErrDPRoundsRaised): the rounds
// added would get a larger σ than the rounds done, and their sum would
// pass ε while the accountant, reckoning one σ, reported less.
// Distributed noise rather than noise through the decryption flooding:
// the flooding noise is added by committee members at decryption, is
// sized for the RLWE secret (2^λ statistical distance) in the slot
// encoding's scale rather than the update's, and a coordinator holding
// t−1 members' shares could strip it; the clients' own noise is in the
// update before it leaves the client, so the decrypted sums, the model
// and the valuation scalars are all post-processing of noised inputs.
// The price is that a client's share of the noise assumes m − 1 others
// add theirs: a sum from which colluding clients remove their own noise
// carries less. The sum of the weights n_i is not covered.
//
// FedAvg follows McMahan et al., "Communication-Efficient Learning of Deep
// Networks from Decentralized Data", AISTATS 2017.
package engine
