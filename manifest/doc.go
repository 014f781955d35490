// Package manifest is a job's trust anchor outside the coordinator: a
// document the ML team (the job's owner) signs before anyone joins, which
// every data holder pins by file or by fingerprint. A client checks what
// the coordinator tells it against the manifest and refuses what
// contradicts it, naming the field (client/manifest.go); the coordinator
// refuses to start when its job file contradicts it.
//
// What it holds, and why each field is there:
//
//   - Version and Job: a manifest for one job is worthless at another.
//   - Schema (features, class names, model kind and shape): the task a
//     client trains; a coordinator cannot swap in another model or label
//     order.
//   - Security: secure aggregation ("he"), the HE parameter-set id (the
//     fingerprint aggregation.Parameters.ID gives, which covers log_n, the
//     moduli, scale and flooding: one id pins the whole set rather than
//     floors on log_n and log Q that a larger modulus at the same ring
//     degree would meet while being less secure), the floors min_log_n and
//     min_log_noise_flooding stated separately so that a reader sees them,
//     and k (min_group_size). A client also keeps a local floor whatever
//     the manifest says (no insecure set, log_n ≥ 14, k ≥ 3).
//   - Committee: size c, threshold t with t > c/2 (a majority is needed
//     to decrypt, so two disjoint groups cannot both decrypt), a 32-byte
//     seed committed here, and the rule: in key-generation epoch e each
//     candidate id gets the score SHA-256("tally committee v1" ‖ seed ‖ e ‖
//     id) and the c lowest scores are drawn (DrawCommittee). A client
//     recomputes the scores of the members it is shown. What the
//     coordinator can still influence: which participants it counts as
//     present (a participant it calls absent is skipped, so by excluding
//     every participant that scores below a colluder it can draw that
//     colluder), and the epoch (failing key generation draws a new
//     committee, at most a few times in a row before the job stops). It
//     cannot draw an id that is not a participant, nor pick members
//     freely among those present.
//   - Coordinator: its receipt public key (a client takes the receipt key
//     from here, never from a join reply) and the SHA-256 of its TLS
//     certificate (DER), which a client pins instead of trusting a CA.
//   - Participants: each data holder's id and Ed25519 identity public
//     key, the key the client signs its calls with (client.Config.KeyFile).
//     A list rather than an identity CA: a consortium job has tens of
//     members whose keys the ML team collects before the job anyway, and
//     a list lets a client check any id without a certificate round trip.
//     An identity CA is left for fleets too large to list.
//   - Edges (optional): each edge aggregator that shows clients a TLS
//     certificate of its own, by id and the SHA-256 of that certificate.
//     A client accepts, at any address it joins (edge or coordinator),
//     the coordinator's certificate or a listed edge's, and nothing else
//     (client.PinnedTLS with TLSPins). An edge not listed shows the
//     coordinator's certificate, which puts the coordinator's TLS key on
//     every edge. With its own certificate, whoever steals an edge's TLS
//     key can impersonate that edge, and to a client any endpoint it
//     joins, the coordinator's included (the pins are not bound to
//     addresses); as through any edge or the coordinator's own address,
//     it then reads nothing: updates are encrypted under the committee's
//     key, calls are signed by the clients' identity keys and checked
//     against this manifest. It can drop or delay what it carries, as an
//     edge can. It no longer holds the coordinator's TLS identity.
//
// Encoding: the file is JSON (Marshal, Parse), but what is signed is the
// canonical binary form (Canonical): the domain tag "tally manifest v1",
// then every field in a fixed order, strings and byte strings prefixed
// by a 4-byte big-endian length, integers as 8-byte big-endian, lists by
// their count; participants sorted by id. Fields added since are
// appended only when set, so that manifests signed before them keep their
// encoding and signature: L (security.max_scalars_per_client_round), then
// the edges sorted by id (with edges L is written even when 0; the tail's
// length, 0, 8 or more bytes, tells which are there). JSON whitespace, key order or
// base64 padding therefore change nothing. The owner signs Canonical with
// Ed25519; the fingerprint is SHA-256 of the signed form (Canonical
// followed by the length-prefixed signature), so two manifests with the
// same fingerprint carry the same content and the same signature.
//
// The package is pure: no network, no clock, no global randomness; Load
// and Save are its only I/O.
package manifest
