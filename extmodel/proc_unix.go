//go:build unix

package extmodel

import (
	"os/exec"
	"syscall"
)

// setProcessGroup puts the adapter in a process group of its own, so that
// killing it also ends what it started (a data loader's workers).
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

func killProcessGroup(cmd *exec.Cmd) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Process.Kill()
}
