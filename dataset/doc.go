// Package dataset supplies the data side of tally: labelled tables in the
// model.Examples form, loaded from CSV files or from small sample datasets
// compiled into the binary, and the tools an experiment needs to turn one
// table into a federation of clients.
//
// # Loading
//
// ReadCSV and LoadCSV read a numeric table with one label column. Errors
// locate the problem (file, line, 0-based column and its name) and wrap
// ErrCSV; see CSVError. ReadTable and LoadTable read a file without
// mapping its labels, and Table.Label maps them onto class names learned
// later (a client learns a job's classes from its coordinator), by name.
// WriteCSV writes a table ReadCSV reads back exactly.
// Embedded returns one of the sample datasets listed by EmbeddedNames
// (breast-cancer, digits, wsn); data/README.md gives their sources and
// licences.
//
// # Splitting and partitioning
//
// Split makes a stratified train/validation/test split. Partition divides
// rows among n clients: iid, Dirichlet label skew (Hsu, Qi & Brown 2019,
// "Measuring the effects of non-identical data distribution for federated
// visual classification"; Gamma draws by Marsaglia & Tsang 2000) or size
// skew (the quantity skew of Li, Diao, Chen & He 2022, "Federated learning
// on non-IID data silos: an experimental study"). LabelSkew measures the
// result. Every row goes to exactly one client and every client gets at
// least MinClientRows rows.
//
// # Corruptions
//
// Corruption names a misbehaving client for valuation experiments: label
// flipping, feature noise, duplicated data and free riders. CorruptData and
// FreeRiderUpdate apply them; the caller applies duplicates by handing out
// the same partition twice.
//
// # Scaling without pooling
//
// ComputeMoments, Moments.Add and Moments.Scaler standardise features from
// per-client sums only, and Flatten/MomentsFromFlat let those sums travel
// as one vector through secure aggregation, so the pooled mean and variance
// are learned without any client revealing its own.
//
// Sums decrypted from a CKKS aggregate are exact only up to the
// aggregation's noise, of standard deviation σ on every entry, which the
// caller knows from the HE parameters and the moments' magnitude
// (aggregation.Parameters.SlotNoiseSigmaAt: √(2N·t)·σ_flood/Δ, plus the
// float64 round-off of encoding and decoding, about 2^-51 of the block's
// root mean square, bounded from the summed moments by
// Moments.FlatSquaresBound).
// Moments.ScalerWithNoise(σ) propagates 8σ on the count, sum and sum of
// squares to the variance, z·σ·(1 + 2|mean| + |E[x²] − 2·mean²|)/n, and
// treats a feature whose variance lies below that floor as constant (Std
// 1): its variance cannot be told from zero. Without the floor an all-zero
// digits pixel read a standard deviation of ~1e-5 from noise alone and a
// rare non-zero validation pixel was multiplied by ~1e5.
//
// Every scaler computed from moments also bounds what it returns: Apply
// clips standardised values to ±√(n − 1), n the number of rows. By
// Samuelson's inequality no value of the n rows themselves lies further
// than √(n − 1) population standard deviations from their mean, so the
// bound never changes a training row, in the clear or under secure
// aggregation alike; it only stops a validation or test value far outside
// the training range from becoming an input larger than any seen in
// training. Clients apply the scaler they are sent without the bound
// (the wire Scaler carries mean and deviation only), which is the same for
// rows that were part of the moments.
//
// # Guarantees
//
// Nothing in the package keeps state between calls, and every function is
// safe for concurrent use on distinct arguments. Functions never modify the
// Examples they receive; those documented to return a copy never alias it.
// Randomness comes only from the caller: a seed (Split, Partition, mixed
// with a per-purpose PCG stream so that equal seeds do not give correlated
// draws) or a *rand.Rand (CorruptData, FreeRiderUpdate). The same inputs
// give the same bits.
package dataset
