//go:build !linux

package inference

// lowerThreadPriority is Linux only; elsewhere the thread keeps its priority.
func lowerThreadPriority(int) {}

// onMainThread is only needed where lowerThreadPriority does something.
func onMainThread() bool { return false }
