//go:build cgo && linux

// This file holds all of the package's C and unsafe code.
//
// Pointer rules (cmd/cgo "Passing pointers"): every pointer that crosses
// into C here is a C pointer (memory from posix_memalign or cudaHostAlloc,
// or the C-allocated libcudart function table), except in register, where
// the caller's memory is passed on (see Pool.Register). C functions return
// their results by value in small structs, so no Go memory is handed to C as
// an out-parameter. Go keeps C pointers only as slices built with
// unsafe.Slice over C memory; the garbage collector ignores them and C
// memory does not move.

package pinned

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

typedef int (*pinned_fn_count)(int *);
typedef int (*pinned_fn_halloc)(void **, size_t, unsigned int);
typedef int (*pinned_fn_ptr)(void *);
typedef int (*pinned_fn_reg)(void *, size_t, unsigned int);
typedef const char *(*pinned_fn_errstr)(int);

// The libcudart entry points we use (CUDA runtime API, stable since CUDA 4).
typedef struct {
	void *handle;
	pinned_fn_count getDeviceCount;
	pinned_fn_halloc hostAlloc;
	pinned_fn_ptr freeHost;
	pinned_fn_reg hostRegister;
	pinned_fn_ptr hostUnregister;
	pinned_fn_errstr getErrorString; // optional
} pinned_cuda;

typedef struct { pinned_cuda *lib; char *err; } pinned_open_result;
typedef struct { void *p; int err; } pinned_ptr_result;
typedef struct { int count; int err; } pinned_count_result;

// pinned_cuda_open dlopens path and resolves the symbols. On failure err is
// a malloc'ed message the caller frees.
static pinned_open_result pinned_cuda_open(const char *path) {
	pinned_open_result r = {0, 0};
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		const char *e = dlerror();
		r.err = strdup(e ? e : "dlopen failed");
		return r;
	}
	pinned_cuda *c = calloc(1, sizeof *c);
	if (!c) {
		r.err = strdup("out of memory");
		return r;
	}
	c->handle = h;
	c->getDeviceCount = (pinned_fn_count)dlsym(h, "cudaGetDeviceCount");
	c->hostAlloc = (pinned_fn_halloc)dlsym(h, "cudaHostAlloc");
	c->freeHost = (pinned_fn_ptr)dlsym(h, "cudaFreeHost");
	c->hostRegister = (pinned_fn_reg)dlsym(h, "cudaHostRegister");
	c->hostUnregister = (pinned_fn_ptr)dlsym(h, "cudaHostUnregister");
	c->getErrorString = (pinned_fn_errstr)dlsym(h, "cudaGetErrorString");
	if (!c->getDeviceCount || !c->hostAlloc || !c->freeHost || !c->hostRegister || !c->hostUnregister) {
		r.err = strdup("missing CUDA runtime symbol (need cudaGetDeviceCount, cudaHostAlloc, cudaFreeHost, cudaHostRegister, cudaHostUnregister)");
		free(c);
		dlclose(h);
		return r;
	}
	r.lib = c;
	return r;
}

static pinned_count_result pinned_cuda_device_count(pinned_cuda *c) {
	pinned_count_result r = {0, 0};
	r.err = c->getDeviceCount(&r.count);
	return r;
}

// cudaHostAllocPortable = 1: pinned for every CUDA context.
static pinned_ptr_result pinned_cuda_host_alloc(pinned_cuda *c, size_t n) {
	pinned_ptr_result r = {0, 0};
	r.err = c->hostAlloc(&r.p, n, 1);
	return r;
}

static int pinned_cuda_free_host(pinned_cuda *c, void *p) { return c->freeHost(p); }

// cudaHostRegisterPortable = 1.
static int pinned_cuda_host_register(pinned_cuda *c, void *p, size_t n) { return c->hostRegister(p, n, 1); }

static int pinned_cuda_host_unregister(pinned_cuda *c, void *p) { return c->hostUnregister(p); }

static const char *pinned_cuda_error_string(pinned_cuda *c, int e) {
	return c->getErrorString ? c->getErrorString(e) : 0;
}

// pinned_call_int64 calls an exported `long long f(void)` in the library
// (tests read a stub libcudart's counters with it); err is 1 if absent.
typedef struct { long long v; int err; } pinned_int64_result;
static pinned_int64_result pinned_call_int64(pinned_cuda *c, const char *name) {
	pinned_int64_result r = {0, 1};
	long long (*f)(void) = (long long (*)(void))dlsym(c->handle, name);
	if (f) {
		r.v = f();
		r.err = 0;
	}
	return r;
}

static pinned_ptr_result pinned_memalign(size_t align, size_t n) {
	pinned_ptr_result r = {0, 0};
	r.err = posix_memalign(&r.p, align, n);
	return r;
}

static int pinned_mlock(void *p, size_t n) { return mlock(p, n) == 0 ? 0 : errno; }
static int pinned_munlock(void *p, size_t n) { return munlock(p, n) == 0 ? 0 : errno; }

// pinned_memlock_limit returns RLIMIT_MEMLOCK's soft limit, -1 for
// unlimited, -2 if it cannot be read.
static long long pinned_memlock_limit(void) {
	struct rlimit rl;
	if (getrlimit(RLIMIT_MEMLOCK, &rl) != 0) return -2;
	if (rl.rlim_cur == RLIM_INFINITY) return -1;
	return (long long)rl.rlim_cur;
}
*/
import "C"

import (
	"fmt"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// cudaLib is an open libcudart. Its table is C memory, never freed.
type cudaLib struct {
	path string
	c    *C.pinned_cuda
}

var (
	cudaMu   sync.Mutex // guards cudaLibs
	cudaLibs = map[string]*cudaLib{}
)

// defaultCUDAPaths are tried in order when Options.CUDARuntimePath is "".
var defaultCUDAPaths = []string{"libcudart.so", "libcudart.so.12", "libcudart.so.11.0"}

// openCUDA dlopens libcudart once per path for the life of the process.
func openCUDA(path string) (*cudaLib, error) {
	paths := defaultCUDAPaths
	if path != "" {
		paths = []string{path}
	}
	cudaMu.Lock()
	defer cudaMu.Unlock()
	var errs []error
	for _, p := range paths {
		if l, ok := cudaLibs[p]; ok {
			return l, nil
		}
		cp := C.CString(p)
		r := C.pinned_cuda_open(cp)
		C.free(unsafe.Pointer(cp))
		if r.lib == nil {
			errs = append(errs, fmt.Errorf("%s: %s", p, C.GoString(r.err)))
			C.free(unsafe.Pointer(r.err))
			continue
		}
		l := &cudaLib{path: p, c: r.lib}
		cudaLibs[p] = l
		return l, nil
	}
	return nil, fmt.Errorf("no usable libcudart: %v", errs)
}

func (l *cudaLib) errString(code C.int) string {
	if s := C.pinned_cuda_error_string(l.c, code); s != nil {
		return fmt.Sprintf("cuda error %d (%s)", int(code), C.GoString(s))
	}
	return fmt.Sprintf("cuda error %d", int(code))
}

// int64Symbol calls an exported `long long name(void)` of the library. It
// exists for tests that read a stub libcudart's counters.
func (l *cudaLib) int64Symbol(name string) (int64, error) {
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	r := C.pinned_call_int64(l.c, cn)
	if r.err != 0 {
		return 0, fmt.Errorf("%s: no symbol %s", l.path, name)
	}
	return int64(r.v), nil
}

// detect picks the mode: CUDA host memory, else mlock, else plain.
func detect(opts Options) (backend, Mode, string) {
	page := os.Getpagesize()
	var why string
	if opts.DisableCUDA {
		why = "CUDA disabled by configuration"
	} else if lib, err := openCUDA(opts.CUDARuntimePath); err != nil {
		why = err.Error()
	} else if r := C.pinned_cuda_device_count(lib.c); r.err != 0 {
		why = fmt.Sprintf("%s: cudaGetDeviceCount: %s", lib.path, lib.errString(r.err))
	} else if r.count <= 0 {
		why = fmt.Sprintf("%s: no CUDA device", lib.path)
	} else {
		return cudaBackend{lib: lib, page: page}, CUDAHost,
			fmt.Sprintf("%s: %d CUDA device(s)", lib.path, int(r.count))
	}
	limit := int64(C.pinned_memlock_limit())
	switch {
	case limit == 0:
		return hostBackend{page: page}, Plain, why + "; RLIMIT_MEMLOCK is 0"
	case limit == -2:
		return hostBackend{page: page}, Plain, why + "; RLIMIT_MEMLOCK unreadable"
	}
	// Probe: lock one page.
	r := C.pinned_memalign(C.size_t(page), C.size_t(page))
	if r.err != 0 {
		return hostBackend{page: page}, Plain, why + "; posix_memalign probe failed"
	}
	e := C.pinned_mlock(r.p, C.size_t(page))
	if e == 0 {
		C.pinned_munlock(r.p, C.size_t(page))
	}
	C.free(r.p)
	if e != 0 {
		return hostBackend{page: page}, Plain, fmt.Sprintf("%s; mlock refused: %v", why, syscall.Errno(e))
	}
	lim := "unlimited"
	if limit > 0 {
		lim = fmt.Sprint(limit)
		if limit < opts.Budget {
			lim += " (below the budget: buffers past it may stay unlocked unless CAP_IPC_LOCK)"
		}
	}
	return hostBackend{page: page, lock: true}, Mlock, why + "; RLIMIT_MEMLOCK " + lim
}

// cBytes makes a Go slice over n bytes of C memory at p.
func cBytes(p unsafe.Pointer, n int) []byte { return unsafe.Slice((*byte)(p), n) }

// ptr returns the address of b's first byte (C memory, or the caller's for
// register).
func ptr(b []byte) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(b)) }

// hostBackend is posix_memalign memory, mlock'ed when lock is set.
type hostBackend struct {
	page int
	lock bool
}

func (h hostBackend) alloc(size int) ([]byte, bool, error) {
	r := C.pinned_memalign(C.size_t(h.page), C.size_t(size))
	if r.err != 0 {
		return nil, false, fmt.Errorf("posix_memalign(%d): %v", size, syscall.Errno(r.err))
	}
	degraded := h.lock && C.pinned_mlock(r.p, C.size_t(size)) != 0
	return cBytes(r.p, size), degraded, nil
}

func (h hostBackend) free(mem []byte) error {
	if h.lock {
		C.pinned_munlock(ptr(mem), C.size_t(cap(mem))) // harmless if it was never locked
	}
	C.free(ptr(mem))
	return nil
}

func (h hostBackend) register(b []byte) (Mode, error) {
	if !h.lock {
		return Plain, nil
	}
	if e := C.pinned_mlock(ptr(b), C.size_t(len(b))); e != 0 {
		return Plain, fmt.Errorf("pinned: mlock of %d registered bytes: %v", len(b), syscall.Errno(e))
	}
	return Mlock, nil
}

func (h hostBackend) unregister(m Mode, b []byte) error {
	if m != Mlock {
		return nil
	}
	if e := C.pinned_munlock(ptr(b), C.size_t(len(b))); e != 0 {
		return fmt.Errorf("pinned: munlock: %v", syscall.Errno(e))
	}
	return nil
}

// cudaBackend is cudaHostAlloc memory.
type cudaBackend struct {
	lib  *cudaLib
	page int
}

func (c cudaBackend) alloc(size int) ([]byte, bool, error) {
	r := C.pinned_cuda_host_alloc(c.lib.c, C.size_t(size))
	if r.err != 0 || r.p == nil {
		return nil, false, fmt.Errorf("cudaHostAlloc(%d): %s", size, c.lib.errString(C.int(r.err)))
	}
	return cBytes(r.p, size), false, nil
}

func (c cudaBackend) free(mem []byte) error {
	if e := C.pinned_cuda_free_host(c.lib.c, ptr(mem)); e != 0 {
		return fmt.Errorf("cudaFreeHost: %s", c.lib.errString(e))
	}
	return nil
}

func (c cudaBackend) register(b []byte) (Mode, error) {
	if e := C.pinned_cuda_host_register(c.lib.c, ptr(b), C.size_t(len(b))); e != 0 {
		return Plain, fmt.Errorf("pinned: cudaHostRegister(%d bytes): %s", len(b), c.lib.errString(e))
	}
	return CUDAHost, nil
}

func (c cudaBackend) unregister(_ Mode, b []byte) error {
	if e := C.pinned_cuda_host_unregister(c.lib.c, ptr(b)); e != 0 {
		return fmt.Errorf("pinned: cudaHostUnregister: %s", c.lib.errString(e))
	}
	return nil
}
