//go:build !cgo || !linux

package heaptrim

// Trim does nothing without cgo (or off Linux) and reports false.
func Trim() bool { return false }
