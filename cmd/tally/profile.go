package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
)

// startProfiles starts a CPU profile into cpuPath and arranges a heap
// profile into memPath, either empty for none, and returns the function
// that stops the one and writes the other, reporting a failure to
// stderr (the run it profiled has ended by then). It exists so that a
// coordinator run as a process of its own (BenchmarkScale, a deployment)
// can be profiled without the clients' work in the same profile.
func startProfiles(cpuPath, memPath string, stderr io.Writer) (stop func(), err error) {
	var cpu *os.File
	if cpuPath != "" {
		if cpu, err = os.Create(cpuPath); err != nil {
			return nil, fmt.Errorf("--cpuprofile: %w", err)
		}
		if err := pprof.StartCPUProfile(cpu); err != nil {
			cpu.Close()
			return nil, fmt.Errorf("--cpuprofile %s: %w", cpuPath, err)
		}
	}
	return func() {
		var errs []error
		if cpu != nil {
			pprof.StopCPUProfile()
			if err := cpu.Close(); err != nil {
				errs = append(errs, fmt.Errorf("--cpuprofile %s: %w", cpuPath, err))
			}
		}
		if memPath != "" {
			// A collection first, so that the in-use figures are those of
			// the last cycle rather than of an older one.
			runtime.GC()
			f, err := os.Create(memPath)
			if err == nil {
				err = pprof.Lookup("allocs").WriteTo(f, 0)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("--memprofile %s: %w", memPath, err))
			}
		}
		if err := errors.Join(errs...); err != nil {
			fmt.Fprintln(stderr, err)
		}
	}, nil
}
