//go:build cgo && linux

package pinned

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/rs/zerolog"
)

// stubCUDA is a stand-in libcudart: host memory from posix_memalign, a table
// of live pointers so that a free of memory it did not allocate is counted,
// and counters the test reads with cudaLib.int64Symbol. Macros pick how
// cudaGetDeviceCount answers and whether cudaHostRegister exists.
const stubCUDA = `
#include <stdlib.h>
#include <pthread.h>
#ifndef DEVICES
#define DEVICES 1
#endif
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static long long allocs, frees, bad_frees, regs, unregs, live;
#define MAXLIVE 4096
static void *table[MAXLIVE];

int cudaGetDeviceCount(int *n) {
#ifdef COUNT_ERR
	*n = 0; return COUNT_ERR;
#else
	*n = DEVICES; return 0;
#endif
}
const char *cudaGetErrorString(int e) { return e == 100 ? "no CUDA-capable device is detected" : "stub error"; }
int cudaHostAlloc(void **p, size_t n, unsigned int flags) {
#ifdef FAIL_OVER
	if (n > FAIL_OVER) return 2;
#endif
	if (flags != 1 || posix_memalign(p, 4096, n) != 0) return 2;
	pthread_mutex_lock(&mu);
	for (int i = 0; i < MAXLIVE; i++) if (!table[i]) { table[i] = *p; break; }
	allocs++; live++;
	pthread_mutex_unlock(&mu);
	return 0;
}
int cudaFreeHost(void *p) {
	int found = 0;
	pthread_mutex_lock(&mu);
	for (int i = 0; i < MAXLIVE; i++) if (table[i] == p) { table[i] = 0; found = 1; break; }
	if (found) { frees++; live--; } else bad_frees++;
	pthread_mutex_unlock(&mu);
	if (!found) return 1;
	free(p);
	return 0;
}
#ifndef NO_REGISTER
int cudaHostRegister(void *p, size_t n, unsigned int flags) { __atomic_add_fetch(&regs, 1, __ATOMIC_SEQ_CST); return flags == 1 ? 0 : 1; }
#endif
int cudaHostUnregister(void *p) { __atomic_add_fetch(&unregs, 1, __ATOMIC_SEQ_CST); return 0; }

static long long get(long long *v) { pthread_mutex_lock(&mu); long long r = *v; pthread_mutex_unlock(&mu); return r; }
long long stub_allocs(void) { return get(&allocs); }
long long stub_frees(void) { return get(&frees); }
long long stub_bad_frees(void) { return get(&bad_frees); }
long long stub_live(void) { return get(&live); }
long long stub_registers(void) { return __atomic_load_n(&regs, __ATOMIC_SEQ_CST); }
long long stub_unregisters(void) { return __atomic_load_n(&unregs, __ATOMIC_SEQ_CST); }
`

// buildStubCUDA compiles the stub with gcc into a fresh directory (a fresh
// path, so the process-wide dlopen cache gives each test its own copy).
func buildStubCUDA(t *testing.T, defines ...string) string {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc not found: cannot build the stub libcudart")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "stub.c")
	if err := os.WriteFile(src, []byte(stubCUDA), 0o644); err != nil {
		t.Fatal(err)
	}
	lib := filepath.Join(dir, "libcudart.so")
	args := append([]string{"-shared", "-fPIC", "-O1", "-o", lib, src, "-lpthread"}, defines...)
	if out, err := exec.Command(gcc, args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return lib
}

func stubCounter(t *testing.T, lib, name string) int64 {
	t.Helper()
	l, err := openCUDA(lib)
	if err != nil {
		t.Fatal(err)
	}
	v, err := l.int64Symbol(name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestStubCUDAHostPath(t *testing.T) {
	lib := buildStubCUDA(t)
	var logs bytes.Buffer
	opts := DefaultOptions()
	opts.CUDARuntimePath = lib
	opts.Budget = 16 << 20
	p, err := NewPool(opts, zerolog.New(&logs), nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode() != CUDAHost {
		t.Fatalf("mode %v, want cuda_host; log: %s", p.Mode(), logs.String())
	}
	if !strings.Contains(logs.String(), `"mode":"cuda_host"`) || !strings.Contains(logs.String(), "1 CUDA device") {
		t.Errorf("start-up log: %s", logs.String())
	}
	ctx := context.Background()
	a := mustGet(t, p, 4_900_000)
	b := mustGet(t, p, 10_000)
	if n := stubCounter(t, lib, "stub_allocs"); n != 2 {
		t.Errorf("cudaHostAlloc called %d times, want 2", n)
	}
	checkPageAligned(t, a.Bytes())
	fill(a.Bytes(), 0xEE)
	p.Put(a)
	a2 := mustGet(t, p, 4_900_000) // reused: no new cudaHostAlloc
	if !allZero(a2.Bytes()) {
		t.Error("reused pinned memory not zeroed")
	}
	if n := stubCounter(t, lib, "stub_allocs"); n != 2 {
		t.Errorf("after reuse cudaHostAlloc called %d times, want 2", n)
	}
	p.Put(a2)
	l := p.Lease()
	if _, err := l.Alloc(ctx, 1000); err != nil {
		t.Fatal(err)
	}
	l.Release()

	// Register memory from outside the Go heap.
	mem, err := syscall.Mmap(-1, 0, 1<<16, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(mem)
	r, err := p.Register(mem)
	if err != nil {
		t.Fatal(err)
	}
	if r.Mode() != CUDAHost || stubCounter(t, lib, "stub_registers") != 1 {
		t.Errorf("Register: mode %v, cudaHostRegister calls %d", r.Mode(), stubCounter(t, lib, "stub_registers"))
	}
	if err := r.Unregister(); err != nil {
		t.Fatal(err)
	}
	_ = r.Unregister()
	if n := stubCounter(t, lib, "stub_unregisters"); n != 1 {
		t.Errorf("cudaHostUnregister calls %d, want 1", n)
	}

	p.Put(b)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	s := p.Stats()
	allocs, frees := stubCounter(t, lib, "stub_allocs"), stubCounter(t, lib, "stub_frees")
	if allocs != s.CAllocs || frees != allocs || s.CFrees != frees {
		t.Errorf("cudaHostAlloc %d, cudaFreeHost %d, pool C allocs %d frees %d", allocs, frees, s.CAllocs, s.CFrees)
	}
	if live, bad := stubCounter(t, lib, "stub_live"), stubCounter(t, lib, "stub_bad_frees"); live != 0 || bad != 0 {
		t.Errorf("after Close: %d pinned buffers live, %d frees of unknown pointers", live, bad)
	}
}

func TestStubCUDAFallsBack(t *testing.T) {
	for name, defines := range map[string][]string{
		"no device":        {"-DDEVICES=0"},
		"count error":      {"-DCOUNT_ERR=100"},
		"missing register": {"-DNO_REGISTER"},
	} {
		t.Run(name, func(t *testing.T) {
			lib := buildStubCUDA(t, defines...)
			var logs bytes.Buffer
			opts := DefaultOptions()
			opts.CUDARuntimePath = lib
			p, err := NewPool(opts, zerolog.New(&logs), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if p.Mode() == CUDAHost {
				t.Fatalf("mode cuda_host with a stub that should be refused")
			}
			if !strings.Contains(logs.String(), lib) {
				t.Errorf("the log does not say why %s was refused: %s", lib, logs.String())
			}
			p.Put(mustGet(t, p, 100_000))
			if name != "missing register" { // a refused dlopen leaves no handle to read
				if n := stubCounter(t, lib, "stub_allocs"); n != 0 {
					t.Errorf("cudaHostAlloc called %d times after fallback", n)
				}
			}
		})
	}
	t.Run("absent library", func(t *testing.T) {
		opts := DefaultOptions()
		opts.CUDARuntimePath = filepath.Join(t.TempDir(), "libcudart.so.none")
		p, err := NewPool(opts, zerolog.Nop(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		if p.Mode() == CUDAHost {
			t.Fatal("cuda_host without a library")
		}
	})
}

// TestCUDAHostAllocFails: a failing cudaHostAlloc is an ErrExhausted (503)
// that gives the budget back.
func TestCUDAHostAllocFails(t *testing.T) {
	lib := buildStubCUDA(t, "-DFAIL_OVER=1048576")
	var logs bytes.Buffer
	opts := DefaultOptions()
	opts.CUDARuntimePath = lib
	p, err := NewPool(opts, zerolog.New(&logs), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	_, err = p.Get(context.Background(), 2<<20)
	var ee *ExhaustedError
	if !errors.As(err, &ee) || !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "cudaHostAlloc") || ee.RetryAfter == 0 {
		t.Fatalf("Get = %v, want an ExhaustedError from cudaHostAlloc", err)
	}
	if s := p.Stats(); s.HeldBytes != 0 || s.InUseBytes != 0 || s.RequestedBytes != 0 || s.CAllocs != 0 {
		t.Errorf("after a failed allocation: %+v", s)
	}
	if !strings.Contains(logs.String(), "allocating a pinned buffer failed") {
		t.Errorf("failure not logged: %s", logs.String())
	}
	p.Put(mustGet(t, p, 1<<20)) // smaller ones still work
}

func checkPageAligned(t *testing.T, b []byte) {
	t.Helper()
	if addr := uintptr(unsafe.Pointer(unsafe.SliceData(b))); addr%uintptr(os.Getpagesize()) != 0 {
		t.Errorf("buffer at %#x is not page-aligned", addr)
	}
}

func TestHostModePageAligned(t *testing.T) {
	p, logs, _ := newTestPool(t, nil)
	if p.Mode() == CUDAHost {
		t.Fatal("cuda_host with CUDA disabled")
	}
	t.Logf("mode %v: %s", p.Mode(), logs)
	for _, n := range []int{1, 4097, 70_000, 1 << 20} {
		b := mustGet(t, p, n)
		checkPageAligned(t, b.Bytes())
		p.Put(b)
	}
	if p.Mode() == Plain && !strings.Contains(logs.String(), "RLIMIT_MEMLOCK") && !strings.Contains(logs.String(), "mlock") {
		t.Errorf("plain mode without a reason in the log: %s", logs)
	}
}

// TestMlockRefusedFallsBackToPlain re-runs itself in a child process whose
// RLIMIT_MEMLOCK is 0; there the pool must come up in Plain mode and work.
func TestMlockRefusedFallsBackToPlain(t *testing.T) {
	const env = "PINNED_TEST_MEMLOCK_ZERO"
	if os.Getenv(env) == "1" {
		const rlimitMemlock = 8 // RLIMIT_MEMLOCK on linux amd64 and arm64
		var rl syscall.Rlimit
		if err := syscall.Getrlimit(rlimitMemlock, &rl); err != nil {
			t.Fatal(err)
		}
		rl.Cur = 0
		if err := syscall.Setrlimit(rlimitMemlock, &rl); err != nil {
			t.Fatal(err)
		}
		p, logs, _ := newTestPool(t, nil)
		if p.Mode() != Plain || !strings.Contains(logs.String(), "RLIMIT_MEMLOCK is 0") {
			t.Fatalf("mode %v with RLIMIT_MEMLOCK 0; log: %s", p.Mode(), logs)
		}
		b := mustGet(t, p, 1<<20)
		checkPageAligned(t, b.Bytes())
		fill(b.Bytes(), 1)
		p.Put(b)
		fmt.Println("CHILD-OK mode=" + p.Mode().String())
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestMlockRefusedFallsBackToPlain$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), env+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "CHILD-OK mode=plain") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}
