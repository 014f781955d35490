// Package edge is a keyless edge aggregator (`tally edge`, issue 18 items 1
// and 2): the middle layer of a cloud–edge–client job, near the clients,
// doing the per-client work that additive homomorphic encryption lets a
// party without any key do — adding ciphertexts, and multiplying them by a
// vector sent in the clear.
//
// # What an edge does
//
// Clients join an edge exactly as they join the coordinator: same command,
// same API (tally client --join EDGE[,OTHER,…,COORDINATOR]). The edge
// serves the coordinator's gRPC service and relays every call byte for
// byte (a gRPC codec that passes frames through), with the client's call
// signature (package internal/auth) copied into the relayed call's
// metadata, so the coordinator still authenticates every client on every
// call, as it would without the edge. It reads the NextTask answers it
// relays to learn which of its clients were handed which train task.
//
// One call it does not relay: an encrypted upload for a train task the
// coordinator says to aggregate (EdgeTask, the edge's own call, signed
// with its own Ed25519 key, which the job's edges list holds). The edge
// checks the upload as the coordinator would before any of it touches a
// sum — payload digest, the client's signed statement
// ([aggregation.Submission]) under the client's enrolled key (EdgeTask
// gives the selected clients' keys), the statement's job, round, attempt,
// key instance, block count and weight, each ciphertext against its
// signed digests and its own structure — so that one bad client cannot
// spoil a partial. It then adds the ciphertexts into its own
// [aggregation.Accumulator] and, under the influence valuation, into an
// [aggregation.Influence] with the round's validation gradient (which
// EdgeTask gives it, as members get it), and holds the client's stream
// open. When none of the clients it handed the task to is still to upload
// (or a margin before the round's deadline) it forwards the batch as one
// partial (EdgeSubmit): per block the partial sum, in exactly the wire
// form of a client ciphertext (c₀ rounded to a multiple of the last
// prime, one row fewer than c₁); each client's signed statement, weight,
// digest and the c₁ rows of each of its ciphertexts; and each client's
// finished influence product (c₀ lifted once, on the edge: the coordinator
// stores it as it is, [aggregation.Influence.AddProduct]). A client is
// answered as soon as its upload is checked and held (so that clients
// which take turns to upload do not wait on each other for the partial);
// the coordinator's answer for each client is logged. Uploads that arrive after
// a partial left form the next one; a task may have several partials.
// Everything else (plaintext jobs, moments, declines, the groups
// valuation, whose groups the coordinator draws, and the projection
// valuation, whose products with each client's whole update the
// coordinator computes after the total's decryption) is relayed as it
// is. Projection is the he default only up to 63 clients a round, where
// the coordinator can take the uploads itself.
//
// Memory: an edge sums each upload as soon as it is checked and keeps of
// it only what the partial forwards (the c₁ rows and the influence
// product, 3.5 MB of a 4.6 MB upload at LogN 14 and 100k parameters); it
// reads and sums at most Config.UploadSlots uploads at once, forwards a
// partial once it holds Config.PartialBytes of its clients (so a task may
// have several partials even when every client uploads in time), and
// forwards one partial at a time: while one is in flight the next full
// one waits, and with it the uploads of its task. What it holds of its
// clients (Edge.Held) is therefore bounded whatever their number; it used
// to hold every upload whole until the round's single partial left, and
// after (22 GB for 1,000 clients through 4 edges in BenchmarkScale). The
// coordinator reads a whole partial before it keeps any of it, so
// PartialBytes bounds its memory per partial in flight too. An upload
// from a client whose upload the edge already took (a client handed the
// task again while it waits for its partial) is answered as a duplicate
// without being read; and such a client's polls (NextTask) are held at
// the edge, up to MaxHold, until its partial is forwarded, so that it is
// not handed the same task to train, encrypt and upload again.
//
// The coordinator verifies every client's signed statement in a partial
// under its enrolled key before anything is kept, keeps each client's c₁
// for the committee ([aggregation.SubmissionStore.AddC1]), adds the
// partial whole ([aggregation.Accumulator.AddPartial]) and counts each
// client exactly as if it had uploaded itself: contributors, weights,
// valuation and receipts name every client.
//
// # Threat model
//
// An edge holds no key share and sees what the coordinator sees of its
// clients: ciphertexts, signed statements, weights, the gradient members
// get in the clear. It can drop or delay its clients' uploads (as a
// network can), and answer them falsely; it cannot read them, and it
// cannot make the committee decrypt anything the members' checks refuse.
// Members verify a round through edges exactly as a flat round
// ([aggregation.Member.VerifyAggregate]): every client's c₁ against the
// digest the client signed, and the aggregate's c₁ against Σᵢ c₁ᵢ. So an
// edge that alters its partial, or leaves a client out of the sum while
// counting it, or alters a client's c₁ in the partial and in what it
// forwards together, is refused with [aggregation.ErrNotASum]; an altered
// influence product with [aggregation.ErrProductMismatch] (attack tests
// in aggregation/edge_test.go). The refusal costs the round's decryption
// (the job's on_round_failure applies), the same denial of service as
// dropping the clients.
//
// What an edge can still shift is c₀: of its partial and of a product.
// Members do not check c₀ (the decryption is c₀ + c₁·s and the shares
// depend on c₁ alone), so a shifted c₀ moves only the result the
// coordinator itself obtains, by an amount the edge chose: the model or
// the influence scalars of the round. That is what a coordinator forging
// c₀ can do too, but an edge is a separate party: the job's operator
// must trust its edges for the correctness of the aggregate (not for its
// confidentiality), or run its own (TestEdgeShiftsC0OfItsPartial shows a
// shift the members accept).
//
// Transport: an edge shows its clients a certificate they accept. Under
// a manifest that is either one the manifest pins for the edge
// (manifest.Edge: the job file's edges[].tls_cert, which tally manifest
// create pins), or, as before, the coordinator's own,
// whose private key the edge then holds (the chart mounts the
// coordinator's TLS Secret into the edge pods unless edge.tlsSecret is
// set). A client accepts the coordinator's pin or any listed edge's at
// every address it joins, and nothing else (client.ErrCertPin); tally
// edge refuses at start a certificate the manifest the coordinator
// serves pins neither for it nor for the coordinator. With its own
// certificate, whoever steals an edge's TLS key can impersonate that
// edge, and to a client any address it joins (the coordinator's too: the
// pins are not bound to addresses), but reads nothing: updates are
// encrypted under the committee's key and calls signed by the clients'
// identity keys, so it can drop or delay them, as an edge can, and no
// more; it no longer holds the coordinator's TLS identity. TLS protects
// transport only: what an edge could do with either key is what it can
// do as an edge. Under mutual TLS (the coordinator's --client-ca) an edge
// shows the coordinator a client certificate (tally edge
// --tls-client-cert) and holds its own clients to the same CA
// (--client-ca).
//
// # Standing
//
// An edge whose id or key the job does not list is refused by name
// ([ErrNotListed], the coordinator's auth.ReasonNotEdge): [Edge.Standing]
// asks before it serves, and tally edge does not start; a refusal met
// later is logged at ERROR and closes [Edge.NotListed].
//
// # Fail-over
//
// A client given several addresses ([client.Failover]) moves to the next
// one when a call fails Unavailable; an edge keeps nothing a client needs
// beyond the round in flight, so a dead edge costs its clients at most the
// upload of that round (the client re-polls and is handed the same task
// again if the round is still open). cmd/tally's TestEdgesMatchFlat kills
// one of two edges after round 1. On a later address, the client probes
// the earlier ones in the background every few seconds and moves back to
// the first that answers SERVING: clients that start before their edge is
// ready join it once it is. The edge's client port serves the gRPC health
// service for the path through it (health.go): SERVING only while the
// coordinator, asked at most once a second through the edge's upstream
// connection, answers SERVING. So a client does not move back to an edge
// that is up but cannot reach the coordinator
// (TestEdgeHealthFollowsTheCoordinator,
// client.TestFailoverStaysOffAnAddressNotServing). The plaintext
// --health-addr port, which Kubernetes probes, reports the process alone,
// so that a coordinator outage does not get the edges restarted.
//
// # Cost
//
// The coordinator no longer decodes, checks the reduction of, or adds its
// edge clients' ciphertexts, nor multiplies them for the influence
// valuation; it still verifies each client's signed statement (one
// Ed25519 verification), authenticates each client's relayed calls,
// stores each client's c₁ for the members and steps the engine once per
// client. Members' costs do not change.
package edge
