package dataset

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sort"

	"github.com/tallyfl/tally/model"
)

// FederationSpec says how a dataset is dealt out to simulated clients.
type FederationSpec struct {
	Clients   int
	Partition PartitionSpec
	// ValFrac and TestFrac are the coordinator's held-out shares.
	ValFrac, TestFrac float64
	Seed              uint64
	// Corruptions maps a client index (0-based) to how it misbehaves.
	Corruptions map[int]Corruption
}

// Federation is a dataset dealt out to clients, with the coordinator's
// validation and test sets. Clients[i] is what client i trains on, with
// its data corruption (label flips, feature noise, duplicates) applied;
// free riders keep their data and misbehave at update time.
type Federation struct {
	Clients     []model.Examples
	Corruptions []Corruption
	Validation  model.Examples
	Test        model.Examples
	Classes     int
}

// Federate splits ds, partitions the training part into spec.Clients
// shards and applies the corruptions. The same spec gives the same
// federation, byte for byte.
func Federate(ds *Dataset, spec FederationSpec) (*Federation, error) {
	if spec.Clients < 1 {
		return nil, fmt.Errorf("%w: %d clients, want ≥ 1", ErrPartition, spec.Clients)
	}
	train, val, test, err := Split(ds.Examples, spec.ValFrac, spec.TestFrac, spec.Seed)
	if err != nil {
		return nil, err
	}
	parts, err := Partition(train, ds.Classes(), spec.Clients, spec.Partition, spec.Seed)
	if err != nil {
		return nil, err
	}
	f := &Federation{Clients: parts, Corruptions: make([]Corruption, spec.Clients), Validation: val, Test: test, Classes: ds.Classes()}
	idx := make([]int, 0, len(spec.Corruptions))
	for i := range spec.Corruptions {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		c := spec.Corruptions[i]
		if i < 0 || i >= spec.Clients {
			return nil, fmt.Errorf("%w: client %d does not exist (clients are 0..%d)", ErrCorruption, i, spec.Clients-1)
		}
		f.Corruptions[i] = c
		switch c.Kind {
		case CorruptDuplicate:
			if c.Of < 0 || c.Of >= spec.Clients || c.Of == i {
				return nil, fmt.Errorf("%w: client %d: duplicate of client %d, which must be another client in 0..%d", ErrCorruption, i, c.Of, spec.Clients-1)
			}
			if spec.Corruptions[c.Of].Kind == CorruptDuplicate {
				return nil, fmt.Errorf("%w: client %d duplicates client %d, itself a duplicate", ErrCorruption, i, c.Of)
			}
		case CorruptLabelFlip, CorruptFeatureNoise:
			f.Clients[i] = CorruptData(parts[i], ds.Classes(), c, seededRNG(spec.Seed, "corrupt", i))
		}
	}
	// Duplicates copy the (possibly corrupted) shard of their original, after
	// every other corruption is in place.
	for _, i := range idx {
		if c := spec.Corruptions[i]; c.Kind == CorruptDuplicate {
			f.Clients[i] = f.Clients[c.Of].Subset(seqInts(f.Clients[c.Of].Len()))
		}
	}
	return f, nil
}

func seqInts(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// seededRNG derives a generator from (seed, purpose, index), so each use of
// randomness is independent of the others and of their order.
func seededRNG(seed uint64, purpose string, i int) *rand.Rand {
	h := sha256.New()
	fmt.Fprintf(h, "%d|%s|%d", seed, purpose, i)
	s := h.Sum(nil)
	return rand.New(rand.NewPCG(binary.LittleEndian.Uint64(s[:8]), binary.LittleEndian.Uint64(s[8:16])))
}
