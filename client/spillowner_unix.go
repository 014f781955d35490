//go:build unix

package client

import (
	"io/fs"
	"os"
	"syscall"
)

// ownedByUs reports whether the file of info belongs to this process's
// user (its uid): the stale spill sweep removes only those. A file whose
// owner cannot be read is not taken for ours.
func ownedByUs(info fs.FileInfo) bool {
	st, ok := info.Sys().(*syscall.Stat_t)
	return ok && st.Uid == uint32(os.Getuid())
}
