// Package sysshm is the node's registry of Triton system shared-memory
// regions: files under /dev/shm that an application process on the device
// created (shm_open), registered by name with a key, an offset and a byte
// size, mapped once (mmap, MAP_SHARED) and optionally pinned
// (cudaHostRegister through the daemon's pinned pool, via Pinner). The
// REST and gRPC frontends resolve an input or output that names a region
// to a slice of that mapping: inputs are handed to ONNX Runtime in place,
// outputs are written into it.
//
// Safety: keys name one file directly under the directory (no path
// separators, no "." or "..", no symlinks followed); the window is checked
// against the file's size at registration and at every use; a region whose
// file was unlinked, or shrank below the window, is dropped at its next
// use; registered bytes are bounded by a budget; a region is unmapped only
// after the last request using it has released it. A process that
// truncates a file while a request reads it can still make that access
// fault (SIGBUS), as with Triton: only the size check at each use guards
// against it.
package sysshm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/edgeai/edge-node/errdefs"
)

// Pinner pins caller-owned memory for the accelerator (the daemon's pinned
// pool: cudaHostRegister, or mlock); unpin undoes it.
type Pinner interface {
	Pin(b []byte) (unpin func() error, err error)
}

// Options configure a Registry.
type Options struct {
	// Dir is where keys are looked up (default /dev/shm).
	Dir string
	// BudgetBytes bounds the bytes of all registered windows (default
	// 1 GiB).
	BudgetBytes int64
	// Pinner, when set, pins each mapped window.
	Pinner Pinner
}

// Registry holds the registered regions. Safe for concurrent use.
type Registry struct {
	opts Options
	log  zerolog.Logger

	mu      sync.Mutex
	regions map[string]*region
	used    int64
}

type region struct {
	name, key    string
	offset, size uint64
	file         *os.File
	mapped       []byte // the page-aligned mapping, for munmap
	mem          []byte // the registered window within it
	unpin        func() error
	refs         int  // requests using it (guarded by Registry.mu)
	dropped      bool // unregistered: unmapped when refs reaches 0
}

// New returns an empty registry. log should carry no "component".
func New(opts Options, log zerolog.Logger) *Registry {
	if opts.Dir == "" {
		opts.Dir = "/dev/shm"
	}
	if opts.BudgetBytes <= 0 {
		opts.BudgetBytes = 1 << 30
	}
	return &Registry{opts: opts, log: log.With().Str("component", "sysshm").Logger(), regions: map[string]*region{}}
}

// Status is one registered region as Triton's status reports it.
type Status struct {
	Name     string `json:"name"`
	Key      string `json:"key"`
	Offset   uint64 `json:"offset"`
	ByteSize uint64 `json:"byte_size"`
}

// maxName bounds region names (they are map keys and appear in errors).
const maxName = 256

// checkName validates a region name: printable, not empty, bounded.
func checkName(name string) error {
	if name == "" || len(name) > maxName {
		return fmt.Errorf("shared memory region name %q: want 1 to %d bytes: %w", name, maxName, errdefs.ErrInvalidArgument)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("shared memory region name %q: control characters are not allowed: %w", name, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// keyPath maps a shm_open key ("/name" or "name") to its file under dir.
func (r *Registry) keyPath(key string) (string, error) {
	k := strings.TrimPrefix(key, "/")
	if k == "" || k == "." || k == ".." || strings.ContainsAny(k, "/\x00") || len(k) > 255 {
		return "", fmt.Errorf("shared memory key %q: want a name under %s (\"/name\", no path separators): %w", key, r.opts.Dir, errdefs.ErrInvalidArgument)
	}
	return filepath.Join(r.opts.Dir, k), nil
}

// Register maps byteSize bytes at offset of the file key names, as region
// name. The window must lie within the file; name must be new; the budget
// must hold it.
func (r *Registry) Register(name, key string, offset, byteSize uint64) error {
	if err := checkName(name); err != nil {
		return err
	}
	path, err := r.keyPath(key)
	if err != nil {
		return err
	}
	if byteSize == 0 {
		return fmt.Errorf("shared memory region %q: byte_size is 0: %w", name, errdefs.ErrInvalidArgument)
	}
	if offset > 1<<62 || byteSize > 1<<62 {
		return fmt.Errorf("shared memory region %q: offset %d or byte_size %d is out of range: %w", name, offset, byteSize, errdefs.ErrInvalidArgument)
	}
	if err := r.admit(name, byteSize); err != nil { // again once mapped: this one spares the mmap
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_NOFOLLOW, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("shared memory region %q: key %q: no such file %s: %w", name, key, path, errdefs.ErrNotFound)
		}
		return fmt.Errorf("shared memory region %q: opening %s: %v: %w", name, path, err, errdefs.ErrInvalidArgument)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file", path)
	}
	if err == nil && uint64(fi.Size()) < offset+byteSize {
		err = fmt.Errorf("offset %d + byte_size %d is past the end of %s (%d bytes)", offset, byteSize, path, fi.Size())
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("shared memory region %q: %v: %w", name, err, errdefs.ErrInvalidArgument)
	}
	page := uint64(os.Getpagesize())
	start := offset / page * page
	mapped, err := unix.Mmap(int(f.Fd()), int64(start), int(offset-start+byteSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return fmt.Errorf("shared memory region %q: mmap of %s: %v: %w", name, path, err, errdefs.ErrInvalidArgument)
	}
	reg := &region{name: name, key: key, offset: offset, size: byteSize, file: f, mapped: mapped,
		mem: mapped[offset-start : offset-start+byteSize : offset-start+byteSize]}
	// Pinned before anyone can use or unregister it.
	if r.opts.Pinner != nil {
		unpin, perr := r.opts.Pinner.Pin(reg.mem)
		if perr != nil {
			r.log.Warn().Err(perr).Str("region", name).Msg("shared memory region is not pinned")
		}
		reg.unpin = unpin
	}

	r.mu.Lock()
	if err = r.admitLocked(name, byteSize); err == nil {
		r.regions[name] = reg
		r.used += int64(byteSize)
	}
	r.mu.Unlock()
	if err != nil {
		reg.unpinLocked(r.log)
		reg.release()
		return err
	}
	r.log.Info().Str("region", name).Str("key", key).Uint64("offset", offset).Uint64("byte_size", byteSize).Msg("shared memory region registered")
	return nil
}

// admit checks that name is free and byteSize fits the budget.
func (r *Registry) admit(name string, byteSize uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.admitLocked(name, byteSize)
}

func (r *Registry) admitLocked(name string, byteSize uint64) error {
	if r.regions[name] != nil {
		return fmt.Errorf("shared memory region %q is already registered: %w", name, errdefs.ErrAlreadyExists)
	}
	if r.used+int64(byteSize) > r.opts.BudgetBytes {
		return fmt.Errorf("shared memory region %q: %d bytes would pass the budget of %d registered bytes (%d in use; unregister regions first): %w",
			name, byteSize, r.opts.BudgetBytes, r.used, errdefs.ErrFailedPrecondition)
	}
	return nil
}

func (reg *region) unpinLocked(log zerolog.Logger) {
	if reg.unpin != nil {
		if err := reg.unpin(); err != nil {
			log.Warn().Err(err).Str("region", reg.name).Msg("unpinning a shared memory region")
		}
		reg.unpin = nil
	}
}

// release unmaps and closes (no request uses it any more).
func (reg *region) release() {
	_ = unix.Munmap(reg.mapped)
	reg.file.Close()
	reg.mapped, reg.mem = nil, nil
}

// dropLocked takes reg out of the registry; it is unmapped now or by the
// last release.
func (r *Registry) dropLocked(reg *region) {
	if reg.dropped {
		return
	}
	reg.dropped = true
	delete(r.regions, reg.name)
	r.used -= int64(reg.size)
	if reg.refs == 0 {
		reg.unpinLocked(r.log)
		reg.release()
	}
}

// Unregister drops region name, or every region when name is "". Requests
// using a region keep it mapped until they finish.
func (r *Registry) Unregister(name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if name == "" {
		for _, reg := range r.regions {
			r.dropLocked(reg)
		}
		return nil
	}
	reg := r.regions[name]
	if reg == nil {
		return fmt.Errorf("shared memory region %q is not registered: %w", name, errdefs.ErrNotFound)
	}
	r.dropLocked(reg)
	r.log.Info().Str("region", name).Msg("shared memory region unregistered")
	return nil
}

// Status lists region name, or every region when name is "".
func (r *Registry) Status(name string) ([]Status, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Status
	for _, reg := range r.regions {
		if name == "" || reg.name == name {
			out = append(out, Status{Name: reg.name, Key: reg.key, Offset: reg.offset, ByteSize: reg.size})
		}
	}
	if name != "" && len(out) == 0 {
		return nil, fmt.Errorf("shared memory region %q is not registered: %w", name, errdefs.ErrNotFound)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Acquire returns byteSize bytes at offset within region name (offsets
// relative to the registered window), and a release func the caller calls
// once when done with them. The file is checked first: a region whose file
// was unlinked or no longer holds the window is dropped.
func (r *Registry) Acquire(name string, offset, byteSize uint64) ([]byte, func(), error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	reg := r.regions[name]
	if reg == nil {
		return nil, nil, fmt.Errorf("shared memory region %q is not registered: %w", name, errdefs.ErrNotFound)
	}
	if offset > reg.size || byteSize > reg.size-offset {
		return nil, nil, fmt.Errorf("shared memory region %q: offset %d + byte_size %d is past its %d bytes: %w", name, offset, byteSize, reg.size, errdefs.ErrInvalidArgument)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(reg.file.Fd()), &st); err != nil || st.Nlink == 0 || uint64(st.Size) < reg.offset+reg.size {
		why := "its file was removed"
		if err == nil && st.Nlink != 0 {
			why = fmt.Sprintf("its file shrank to %d bytes", st.Size)
		}
		r.dropLocked(reg)
		r.log.Warn().Str("region", name).Str("why", why).Msg("shared memory region dropped")
		return nil, nil, fmt.Errorf("shared memory region %q: %s; the registration was dropped: %w", name, why, errdefs.ErrNotFound)
	}
	reg.refs++
	var once sync.Once
	return reg.mem[offset : offset+byteSize : offset+byteSize], func() {
		once.Do(func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			reg.refs--
			if reg.dropped && reg.refs == 0 {
				reg.unpinLocked(r.log)
				reg.release()
			}
		})
	}, nil
}

// Close drops every region (Unregister("")).
func (r *Registry) Close() { _ = r.Unregister("") }
