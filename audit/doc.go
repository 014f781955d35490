// Package audit measures what a tally coordinator could rebuild of a
// client's data from what it sees, so that the threat model's claims rest
// on evidence (issue 21). It plays an honest-but-curious coordinator: it
// simulates each release a job makes with the real local training of
// package model (the job's epochs, batch size, learning rate and momentum,
// on rows standardised by the job's federated scaler), runs the strongest
// attack it has against that release, and scores the result beside random
// guessing. `tally audit` (make audit) writes the table, a CSV and
// pictures into audit/results.
//
// # Releases
//
//   - one client's plaintext update Δᵢ (what a coordinator without secure
//     aggregation sees: the baseline), for a client of one row, of a small
//     batch, and of a job-sized shard;
//   - Σ nᵢΔᵢ over k = 2, 3, 5, 10 clients (what `he` decrypts), and the
//     sums over a seeded partition into groups of ≥ k (the `groups`
//     valuation mode);
//   - the influence mode's scalars aᵢ,ᵣ = ⟨∇L_val(w_r), nᵢΔᵢ,ᵣ⟩, one per
//     client and round, over every round of a job.
//
// # Attacks
//
// Reconstruction is analytic. For one example, the gradient of a
// first-layer unit's weights divided by that of its bias is the input
// (Phong et al., "Privacy-preserving deep learning via additively
// homomorphic encryption", IEEE TIFS 2018); it stays exact after any number
// of local steps with momentum, since every step adds a multiple of the
// same row. For a batch, each ReLU neuron (or, for logistic regression,
// each class) yields a blend of the rows that reached it, and a neuron that
// fired for one row only yields that row: the separation that Fowl et al.
// ("Robbing the Fed", ICLR 2022) force with a malicious model and that a
// fresh model gives by chance. Each true row is scored against its best
// candidate, and guessing gets as many candidates drawn from the
// attacker's own validation rows.
//
// Labels follow from the last layer's bias: one row's gradient there is
// p − onehot(y), so the label is the one entry of the other sign (iDLG:
// Zhao, Mopuri & Bilen, "iDLG: Improved Deep Leakage from Gradients",
// 2020), and a batch's or a sum's label counts follow from Δb_L ≈
// −η·Ω·(p̄ − π), with Ω the momentum-weighted step count the attacker knows
// from the reported sample count (labelShares). From the influence
// scalars, label shares are fitted by non-negative least squares against
// the class-conditional validation gradients (scalarShares).
//
// Membership is the cosine between the release and a candidate row's
// descent direction at the global model (the gradient-alignment idea of
// Nasr, Shokri & Houmansadr, "Comprehensive Privacy Analysis of Deep
// Learning", IEEE S&P 2019), or, for the scalars, the correlation over
// rounds between a client's scalars and the row's own ⟨∇L_val, −∇ℓ⟩;
// non-members are test rows with the members' labels, so that label skew
// does not pass for membership. The AUC is the Mann–Whitney statistic.
//
// Gradient matching (DLG: Zhu, Liu & Han, "Deep Leakage from Gradients",
// NeurIPS 2019; Geiping et al., "Inverting Gradients — How easy is it to
// break privacy in federated learning?", NeurIPS 2020) optimises dummy
// rows until their gradient matches the observed one, and the Cocktail
// Party Attack (Kariyappa et al., ICML 2023) separates a sum of linear
// layer gradients by ICA; see gradmatch.go for what of that is here.
//
// # Metrics
//
// Images (digits, 8×8, 0–16): PSNR with peak 16, and SSIM (Wang et al.,
// "Image quality assessment: from error visibility to structural
// similarity", IEEE TIP 2004) as the mean over 3×3 windows. Tables
// (breast-cancer): the RMS distance, in standard deviations, from each true
// row to its nearest reconstruction and the mean absolute per-feature
// error of that match. Labels: the share of a release's label multiset
// recovered. Membership: AUC, 0.5 being random guessing.
//
// # Purity
//
// Run is deterministic in Config.Seed: every random choice comes from a
// PCG keyed by SHA-256 of (seed, purpose, indices). It reads no clock and
// writes no file; cmd/tally adds the machine and date.
package audit
