package bench

import (
	"runtime"
	"syscall"
)

// lockPacer pins the pacing goroutine to its thread and sets the thread's timer
// slack to 1 ns: time.Sleep here wakes about 1 ms late, nanosleep about 40 µs.
func lockPacer() {
	runtime.LockOSThread()
	const prSetTimerSlack = 29
	syscall.Syscall(syscall.SYS_PRCTL, prSetTimerSlack, 1, 0)
}

func unlockPacer() { runtime.UnlockOSThread() }

// sleepNS blocks the pacer's thread for ns nanoseconds.
func sleepNS(ns int64) {
	ts := syscall.NsecToTimespec(ns)
	syscall.Nanosleep(&ts, nil)
}
