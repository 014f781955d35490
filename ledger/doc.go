// Package ledger is the coordinator's durable state: one bbolt file holding
// the coordinator's own records, its Ed25519 signing key and a hash-chained,
// signed ledger of receipts, one per (job, round, client); plus the pure
// arithmetic of payouts and usage quotas.
//
// # Storage and durability
//
// A DB is one bbolt file (go.etcd.io/bbolt, a copy-on-write B+tree after
// LMDB) locked by one process at a time; a second Open fails with
// ErrLocked after Options.LockTimeout. The coordinator keeps its state in
// named buckets of JSON or raw records through Tx.Put, Get, ForEach and
// Delete, and does one step of its round engine in one DB.Update: bbolt
// writes the new pages, fdatasyncs, then writes and fdatasyncs the meta
// page that makes them current, so a kill or power loss at any moment
// leaves the file at the last committed step, never between two. An Update
// whose function fails writes nothing. Receipts are appended inside that
// same transaction (Tx.AppendReceipts), so a round's receipts exist if and
// only if the round's state that produced them was committed.
//
// # Damaged files
//
// Open creates a missing file (whole, under a temporary name linked into
// place) but never re-initialises an existing one. Before bbolt maps a
// file, CheckFile reads its two meta pages with ordinary reads and refuses
// a file that is empty, has no valid meta page, or is shorter than the
// pages its meta page counts (bbolt would map it and fault on the first
// page past the end, killing the process). Open then runs bbolt's
// consistency check (Tx.Check) after touching every key and value with
// memory faults turned into errors (debug.SetPanicOnFault), so a damaged
// page inside the file is an error, not a crash. Every refusal wraps
// ErrCorrupt and names the file. bbolt has no checksums over data pages: a
// flipped bit in a page header or a branch is found by the consistency
// check, one inside a receipt by Verify (strict decoding, hash, chain,
// signature), and one inside another record's value by the record's seal:
// in a file of Format 2 every caller record is stored with a CRC-32C of
// its bucket, key and value, checked on every read (Get, GetRaw, ForEach,
// Last) and by Check, so a damaged or misplaced record is refused with
// ErrCorrupt naming the file and the record, never returned. Files of
// FormatUnsealed (written before seals) open and work as before, without
// that check. DB.Backup writes a consistent copy (Tx.WriteTo).
//
// # Receipts: hash chain and signatures
//
// Each Receipt states, for one client and one round: the job, the digest
// of the client's submission as received, every decryption of the round
// (purpose and number of contributors), the valuation method and privacy
// mode, the value and its standard error, the payout and the quota credit.
// A settlement receipt (Kind "settlement") states what one client was
// paid from a payment period's escrow, rounds FromRound … Round, and its
// total V over them; receipts carry the job's Decay, so that Standings
// totals them as the coordinator does. Receipts written before Kind,
// FromRound and Decay existed hash and verify as they always did.
// Under secure aggregation a receipt lists every decryption since the
// previous round's receipts — failed attempts, the feature moments and
// influence scalars included — each with its position in the job's
// decryption transcript (aggregation.Transcript), round, attempt, request
// ID and status (decrypted or failed), and carries the transcript's head
// and length after them (TranscriptHead, TranscriptLen); such receipts
// encode as v3 (Receipt.Canonical). A client checks the head against the
// chain the coordinator shows it, and `tally ledger verify` checks the
// coordinator's stored transcript and that the receipts list it whole
// (coordinator.VerifyTranscript).
// Receipts are numbered Seq = 1, 2, 3, ... across all jobs, rounds and
// clients. Receipt.Canonical is a length-prefixed binary encoding of every
// field but Hash and Signature, PrevHash included; Hash is its SHA-256,
// and Signature is the Ed25519 signature (RFC 8032) of those 32 bytes.
// PrevHash is the Hash of the receipt before, so changing any stored
// receipt breaks either its own hash or the link from the next one: the
// construction of Haber and Stornetta, "How to time-stamp a digital
// document" (J. Cryptology 3(2), 1991), with a signature per record
// instead of a trusted time-stamping service.
//
// # What it guarantees, and to whom
//
// The ledger gives tamper evidence, not secrecy: receipts are plaintext
// and the file also holds the private key (see DB.SigningKey for why, and
// the risk), so protect it like a key. With only the coordinator's public
// key, offline:
//
//   - an auditor holding the database checks every record and the chain
//     (DB.VerifyWithKey; DB.Verify uses the key stored in the file, which
//     catches any edit made without the key but trusts the file's key);
//     the first bad record is named by seq, round and client, with what is
//     wrong with it;
//   - a client holding its own receipts file (JSON lines) checks that each
//     receipt was signed by the coordinator, is about itself, carries the
//     digest of what it submitted, and lists what was decrypted in that
//     round, so it can see that its update was never decrypted alone
//     (VerifyClientFile);
//   - anyone with both checks that the ledger still holds the client's
//     receipts unchanged (DB.VerifyIncluded).
//
// What it cannot show: a key holder can rewrite and re-sign the whole
// chain, and a chain cut short at its end still verifies. Both are exposed
// by receipts that clients already hold, which is why clients keep them.
//
// Payouts and quotas, the arithmetic without storage, are package
// ledger/payout, which the round engine uses.
//
// The package imports nothing of tally but ledger/payout (Standings
// totals with payout.Totals); the coordinator's Store implementation is
// built on it.
package ledger
