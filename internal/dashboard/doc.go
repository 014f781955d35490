// Package dashboard serves tally's web pages: the coordinator dashboard
// (job phase and round, the validation loss and accuracy per finished
// round as charts, the clients, the contribution table of the signed
// receipts with each client's value per round, the decryption audit, the
// key generations), and a data holder's page of its own receipts, each
// verified against the coordinator's public key.
//
// The pages are hand-written HTML, CSS and JavaScript embedded in the
// binary; the charts are inline SVG drawn by assets/chart.js, with axes,
// ticks, units and a legend, one point per finished round. Nothing is
// fetched from elsewhere and nothing is built on the user's side.
//
// Guarantees:
//
//   - Read-only: only GET and HEAD are answered; nothing the dashboard
//     does changes the job (the coordinator's state is read through
//     Server.Status and Server.Activity, and its ledger in read
//     transactions).
//   - Access: with a viewer token every request must carry it (bearer
//     token, or the cookie that /?token= sets), compared in constant time;
//     without one the server listens on loopback only (Serve refuses
//     anything else) and answers only requests addressed to a loopback
//     host name, so that a web page cannot reach it by DNS rebinding.
//   - What it shows: what JobStatus shows (phase, rounds, per-client sample
//     counts and rounds contributed) and what the coordinator's operator
//     holds in the ledger (per-client values, payouts, quotas, what was
//     decrypted, by whom). Never an update, a submission digest, a key, a
//     token or a network address.
//   - The contribution table is ledger.Standings of the receipts, the
//     function `tally scores` prints, so the two agree by construction.
//   - A data holder's page reads that client's receipts file and nothing
//     else; each receipt is verified on its own (hash, signature, client
//     id, order), so one tampered receipt is marked without hiding the
//     rest.
package dashboard
