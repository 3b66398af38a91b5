package bench

import (
	"os"
	"strconv"
	"syscall"
)

// SetNice sets the nice value of every thread of this process (Linux keeps it per
// thread; threads and processes started later inherit it from their creator). With
// a negative value the harness, and the servers it starts, are disturbed less by
// other work on a shared machine. It needs root (CAP_SYS_NICE) to go below 0.
func SetNice(nice int) error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return syscall.Setpriority(syscall.PRIO_PROCESS, 0, nice)
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, nice); err != nil {
			return err
		}
	}
	return nil
}
