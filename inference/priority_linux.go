package inference

import "golang.org/x/sys/unix"

// lowerThreadPriority sets the calling OS thread's nice value (Linux
// schedules threads one by one: PRIO_PROCESS with a thread id is that thread
// only). Best effort: a failure leaves the thread at normal priority.
func lowerThreadPriority(nice int) {
	_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), nice)
}

// onMainThread reports whether the calling goroutine runs on the process's
// main thread.
func onMainThread() bool { return unix.Gettid() == unix.Getpid() }
