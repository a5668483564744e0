// Package pinned hands out page-aligned host buffers allocated in C, pinned
// for DMA when the CUDA runtime is present, from a pool bounded by a byte
// budget. It is the only package in the module (with cgo/...) that uses
// import "C".
//
// # Modes
//
// NewPool picks one mode, logs it (with the reason) and exports it as the
// pinned_mode gauge:
//
//   - CUDAHost: libcudart was found at run time with dlopen (no build-time
//     CUDA dependency; Options.CUDARuntimePath, else libcudart.so,
//     libcudart.so.12, libcudart.so.11.0) and cudaGetDeviceCount reports at
//     least one device. Buffers come from cudaHostAlloc(Portable) and go back
//     with cudaFreeHost; Register uses cudaHostRegister/cudaHostUnregister.
//   - Mlock: no usable CUDA runtime, RLIMIT_MEMLOCK is not 0 and a probe
//     mlock of one page succeeds. Buffers come from posix_memalign(page size)
//     and are mlock'ed; a buffer whose mlock fails later (the limit is
//     reached) is still used, unlocked, and counted in
//     pinned_mlock_failures_total. The process's RLIMIT_MEMLOCK is treated as
//     the operator's policy: a limit of 0 means Plain even for a process with
//     CAP_IPC_LOCK.
//   - Plain: page-aligned posix_memalign memory, not locked.
//
// Builds without cgo (or on other systems than Linux) compile a stub with the
// same API: always Plain, memory from the Go heap, no page-alignment
// guarantee. It exists so that the module builds and tests without a C
// toolchain; it is not a production mode.
//
// # Size classes and the budget
//
// A request of n bytes is served from the smallest size class >= n. Classes
// run from Options.MinClass to Options.MaxClass with ClassesPerDoubling steps
// per power of two, each rounded up to the page size (4 steps bound the waste
// at 25% instead of 50%; a 4.9 MB tensor takes a 5 MiB class, not 8 MiB).
// The budget counts every C byte the pool holds, idle or in use. When a class
// has no idle buffer and a new one would exceed the budget, idle buffers of
// other classes are freed first; if that is not enough the request waits, in
// FIFO order (a waiting large request is not overtaken by later small ones),
// for at most Options.MaxWait or until its context is done, and then fails
// with an *ExhaustedError that wraps ErrExhausted (and the context's error,
// if that was the cause). The HTTP layer maps ErrExhausted to 503 with
// Retry-After (ExhaustedError.RetryAfter). A request larger than MaxClass or
// than the whole budget fails at once with ErrTooLarge: waiting could never
// help it. The pool never grows beyond the budget.
//
// After warm-up (every class a workload uses has idle buffers) Get and Put do
// no C allocation and no Go allocation; Stats.CAllocs and
// pinned_c_allocs_total count C allocations so a benchmark can show it.
//
// # Lifecycle and who frees what
//
//	NewPool → Get/Put (or Lease → Alloc… → Release) → Close
//
// The pool owns all C memory. Get returns a *Buffer that the caller owns
// until it calls Put exactly once; after Put neither the Buffer nor any slice
// from Bytes may be used (the same object is handed out again). A Put of a
// buffer that is not out panics: it is a programming error that would
// otherwise hand one buffer to two requests. A Lease is the request-scoped
// form: Alloc gets buffers, Release puts all of them back.
//
// Close is idempotent. It fails waiting requests with ErrClosed, frees every
// idle buffer at once and makes later Gets fail with ErrClosed. Buffers still
// out at Close stay valid; their Put frees them (so Close never pulls memory
// from under a running inference). Registrations are independent of the
// pool: the caller that Registers memory Unregisters it and frees it.
//
// The libcudart handle is opened once per path for the life of the process
// and never dlclosed (the CUDA runtime does not support being unloaded while
// its allocations may be live).
//
// # Never another request's bytes
//
// Get zeroes the n bytes it hands out (Bytes has len n and cap n, so the
// class tail beyond n is unreachable). Zeroing on Get rather than on Put also
// covers fresh C memory, which neither cudaHostAlloc nor posix_memalign
// clears, without clearing whole classes. The cost is a memclr of n bytes
// per Get (see BenchmarkZero and docs/architecture-pinned.md).
//
// # cgo pointer rules
//
// All buffer memory is C memory: Go holds pointers to C memory (a slice made
// with unsafe.Slice over the C pointer) and passes C pointers back to C to
// free them. No Go pointer is ever passed to C to be kept, C calls return
// their results by value (no Go out-parameters), and the libcudart function
// table lives in C memory. The tests run clean with GOEXPERIMENT=cgocheck2.
// The one exception is under the caller's control: Register passes the
// caller's memory to cudaHostRegister, which keeps it; it must therefore not
// be Go heap memory (use memory from mmap or another C allocator). All unsafe
// code is in pinned_cgo.go.
package pinned
