// Package heaptrim hands memory that the C allocator keeps after frees back
// to the operating system.
//
// Why: ONNX Runtime allocates a session's weights, its arena and its
// per-session thread pools with malloc. When a session is destroyed glibc
// keeps much of that memory in its per-thread arenas and above its trim
// threshold, so a node that swaps model versions sees its resident memory
// grow by several MiB per swap although nothing leaks (measured: 30 swaps
// of ppocr_det grew RSS by 109 MiB with ONNX Runtime's defaults, and more
// with its CPU arena or memory pattern off; with MALLOC_ARENA_MAX=2 and low
// trim/mmap thresholds in the environment the growth vanished, which
// located the cause). Trim calls glibc's malloc_trim(0), which returns free
// pages of every arena; the node calls it after destroying a session.
//
// Builds without cgo, and C libraries other than glibc, get a Trim that
// does nothing and reports false.
package heaptrim
