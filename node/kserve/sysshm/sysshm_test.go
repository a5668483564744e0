package sysshm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/errdefs"
)

// shmFile creates dir/key with size bytes of a pattern.
func shmFile(t testing.TB, dir, key string, size int) []byte {
	t.Helper()
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i * 7)
	}
	if err := os.WriteFile(filepath.Join(dir, key), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

type countingPinner struct {
	mu            sync.Mutex
	pinned, unpin int
}

func (p *countingPinner) Pin(b []byte) (func() error, error) {
	p.mu.Lock()
	p.pinned++
	p.mu.Unlock()
	return func() error {
		p.mu.Lock()
		p.unpin++
		p.mu.Unlock()
		return nil
	}, nil
}

func TestRegisterRejectsBadArguments(t *testing.T) {
	dir := t.TempDir()
	shmFile(t, dir, "data", 10000)
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o700); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(outside, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	r := New(Options{Dir: dir, BudgetBytes: 1 << 20}, zerolog.Nop())
	defer r.Close()
	for _, tc := range []struct {
		name, region, key string
		offset, size      uint64
		class             error
		msg               string
	}{
		{"empty name", "", "data", 0, 10, errdefs.ErrInvalidArgument, "want 1 to 256 bytes"},
		{"long name", strings.Repeat("n", 257), "data", 0, 10, errdefs.ErrInvalidArgument, "want 1 to 256 bytes"},
		{"control character", "a\nb", "data", 0, 10, errdefs.ErrInvalidArgument, "control characters"},
		{"empty key", "r", "", 0, 10, errdefs.ErrInvalidArgument, "no path separators"},
		{"slash key", "r", "/", 0, 10, errdefs.ErrInvalidArgument, "no path separators"},
		{"dot dot", "r", "/..", 0, 10, errdefs.ErrInvalidArgument, "no path separators"},
		{"traversal", "r", "../../etc/passwd", 0, 10, errdefs.ErrInvalidArgument, "no path separators"},
		{"nested", "r", "a/b", 0, 10, errdefs.ErrInvalidArgument, "no path separators"},
		{"nul", "r", "da\x00ta", 0, 10, errdefs.ErrInvalidArgument, "no path separators"},
		{"missing file", "r", "/nope", 0, 10, errdefs.ErrNotFound, "no such file"},
		{"symlink out", "r", "link", 0, 10, errdefs.ErrInvalidArgument, "opening"},
		{"directory", "r", "adir", 0, 10, errdefs.ErrInvalidArgument, ""},
		{"zero size", "r", "data", 0, 0, errdefs.ErrInvalidArgument, "byte_size is 0"},
		{"past the end", "r", "data", 9000, 1001, errdefs.ErrInvalidArgument, "offset 9000 + byte_size 1001 is past the end"},
		{"huge offset", "r", "data", 1 << 63, 1, errdefs.ErrInvalidArgument, "out of range"},
		{"over the budget", "r", "data", 0, 2 << 20, errdefs.ErrFailedPrecondition, "would pass the budget of 1048576"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := r.Register(tc.region, tc.key, tc.offset, tc.size)
			if !errors.Is(err, tc.class) || !strings.Contains(fmt.Sprint(err), tc.msg) {
				t.Fatalf("%v, want %v with %q", err, tc.class, tc.msg)
			}
		})
	}
	if st, _ := r.Status(""); len(st) != 0 {
		t.Errorf("regions after only bad registrations: %+v", st)
	}
}

// A registered window reads what the other side wrote and writes where it
// reads (MAP_SHARED), at any offset; windows are checked; duplicates and
// the budget are refused; unregister frees the budget.
func TestRegisterAcquireUnregister(t *testing.T) {
	dir := t.TempDir()
	want := shmFile(t, dir, "data", 3*4096)
	p := &countingPinner{}
	r := New(Options{Dir: dir, BudgetBytes: 8192, Pinner: p}, zerolog.Nop())
	defer r.Close()
	if err := r.Register("in", "/data", 100, 5000); err != nil {
		t.Fatal(err)
	}
	if err := r.Register("in", "/data", 0, 10); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("duplicate name: %v", err)
	}
	if err := r.Register("more", "/data", 0, 4000); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "budget of 8192") {
		t.Errorf("over the budget: %v", err)
	}
	b, release, err := r.Acquire("in", 10, 20)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, want[110:130]) {
		t.Errorf("window bytes %x, want %x", b, want[110:130])
	}
	copy(b, "written by the node!")
	release()
	release() // once only
	f, _ := os.ReadFile(filepath.Join(dir, "data"))
	if string(f[110:130]) != "written by the node!" {
		t.Errorf("file after a write through the mapping: %q", f[110:130])
	}
	for _, w := range [][2]uint64{{4990, 11}, {5001, 0}, {0, 5001}, {1 << 63, 1 << 63}} {
		if _, _, err := r.Acquire("in", w[0], w[1]); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("window %v: %v, want ErrInvalidArgument", w, err)
		}
	}
	if _, _, err := r.Acquire("nope", 0, 1); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("unknown region: %v", err)
	}
	st, err := r.Status("in")
	if err != nil || len(st) != 1 || st[0] != (Status{Name: "in", Key: "/data", Offset: 100, ByteSize: 5000}) {
		t.Errorf("status: %+v %v", st, err)
	}
	if err := r.Unregister("in"); err != nil {
		t.Fatal(err)
	}
	if err := r.Unregister("in"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("second unregister: %v", err)
	}
	if err := r.Register("more", "/data", 0, 8192); err != nil {
		t.Errorf("after unregister, the budget is free again: %v", err)
	}
	r.Close()
	if p.pinned != 2 || p.unpin != 2 {
		t.Errorf("pinned %d, unpinned %d, want 2 and 2", p.pinned, p.unpin)
	}
}

// A region whose file is removed, or shrinks, is dropped at its next use
// with a clear error; one unregistered while a request uses it stays
// mapped until that request releases it.
func TestRegionThatDisappears(t *testing.T) {
	dir := t.TempDir()
	shmFile(t, dir, "a", 4096)
	shmFile(t, dir, "b", 8192)
	shmFile(t, dir, "c", 4096)
	r := New(Options{Dir: dir}, zerolog.Nop())
	defer r.Close()
	for _, k := range []string{"a", "b", "c"} {
		if err := r.Register(k, k, 0, 4096); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(filepath.Join(dir, "a")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Acquire("a", 0, 1); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "its file was removed; the registration was dropped") {
		t.Errorf("unlinked region: %v", err)
	}
	if err := os.Truncate(filepath.Join(dir, "b"), 100); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Acquire("b", 0, 1); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "shrank to 100 bytes") {
		t.Errorf("truncated region: %v", err)
	}
	if st, _ := r.Status(""); len(st) != 1 || st[0].Name != "c" {
		t.Errorf("status after the drops: %+v", st)
	}
	b, release, err := r.Acquire("c", 0, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Unregister(""); err != nil {
		t.Fatal(err)
	}
	b[0], b[4095] = 1, 2 // still mapped: the request holds it
	release()
	if st, _ := r.Status(""); len(st) != 0 {
		t.Errorf("status after unregister all: %+v", st)
	}
}

// Racing registrations, unregistrations and uses of the same names (run
// with -race): every call either works or fails with its error class, the
// budget is never exceeded, and everything is released at the end.
func TestRacingRegisterUnregister(t *testing.T) {
	dir := t.TempDir()
	shmFile(t, dir, "data", 4*4096)
	r := New(Options{Dir: dir, BudgetBytes: 3 * 4096}, zerolog.Nop())
	var wg sync.WaitGroup
	var over sync.Once
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				name := fmt.Sprint("r", (g+i)%4)
				switch i % 3 {
				case 0:
					err := r.Register(name, "data", uint64(4096*(i%4)), 4096)
					if err != nil && !errors.Is(err, errdefs.ErrAlreadyExists) && !errors.Is(err, errdefs.ErrFailedPrecondition) {
						t.Errorf("register: %v", err)
					}
				case 1:
					if b, release, err := r.Acquire(name, 0, 4096); err == nil {
						b[0]++
						release()
					} else if !errors.Is(err, errdefs.ErrNotFound) {
						t.Errorf("acquire: %v", err)
					}
				case 2:
					if err := r.Unregister(name); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
						t.Errorf("unregister: %v", err)
					}
				}
				r.mu.Lock()
				if r.used > r.opts.BudgetBytes {
					over.Do(func() { t.Errorf("%d registered bytes over the budget %d", r.used, r.opts.BudgetBytes) })
				}
				r.mu.Unlock()
			}
		}(g)
	}
	wg.Wait()
	r.Close()
	if r.used != 0 || len(r.regions) != 0 {
		t.Errorf("after Close: %d bytes, %d regions", r.used, len(r.regions))
	}
}

// FuzzRegister: any name, key, offset and size either register a window
// within the file or fail with an error of a known class; never a panic.
func FuzzRegister(f *testing.F) {
	dir := f.TempDir()
	shmFile(f, dir, "data", 8192)
	for _, s := range []struct {
		name, key    string
		offset, size uint64
	}{{"r", "/data", 0, 8192}, {"r", "../data", 0, 1}, {"", "data", 1, 1}, {"r", "data", 8191, 2}, {"r\x00", "/data/", 1 << 63, 1 << 63}} {
		f.Add(s.name, s.key, s.offset, s.size)
	}
	f.Fuzz(func(t *testing.T, name, key string, offset, size uint64) {
		r := New(Options{Dir: dir, BudgetBytes: 1 << 20}, zerolog.Nop())
		defer r.Close()
		err := r.Register(name, key, offset, size)
		if err == nil {
			if offset+size > 8192 || size == 0 {
				t.Fatalf("registered a window %d+%d of an 8192-byte file", offset, size)
			}
			b, release, err := r.Acquire(name, 0, size)
			if err != nil || uint64(len(b)) != size {
				t.Fatalf("acquire of the whole window: %d bytes, %v", len(b), err)
			}
			release()
			return
		}
		for _, class := range []error{errdefs.ErrInvalidArgument, errdefs.ErrNotFound, errdefs.ErrAlreadyExists, errdefs.ErrFailedPrecondition} {
			if errors.Is(err, class) {
				return
			}
		}
		t.Fatalf("error of no class: %v", err)
	})
}
