package inference

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"github.com/rs/zerolog"
	ort "github.com/yalue/onnxruntime_go"
)

// EnvLibraryPath is the environment variable that names the ONNX Runtime
// shared library when EnvironmentConfig.LibraryPath is empty. The node's
// --ort-lib flag sets EnvironmentConfig.LibraryPath directly.
const EnvLibraryPath = "ONNXRUNTIME_LIB"

// setupHint ends every error about a missing or unusable library.
const setupHint = "set ort_library in the config file, --ort-lib or " + EnvLibraryPath +
	" to the path of libonnxruntime.so.1 (the release archive's lib/libonnxruntime.so.1; in a source checkout, `make setup` fetches it)"

// EnvironmentConfig configures the process-wide ONNX Runtime environment.
type EnvironmentConfig struct {
	// LibraryPath is the path of libonnxruntime.so. Empty means the value
	// of the ONNXRUNTIME_LIB environment variable.
	LibraryPath string
	// LogLevel is ONNX Runtime's own log level (its messages go to
	// stderr, not to zerolog): "verbose", "info", "warning" (default),
	// "error" or "fatal".
	LogLevel string
}

// Environment is the process-wide ONNX Runtime environment. onnxruntime_go
// keeps the environment in package globals, so at most one Environment may
// be live in a process; Load sessions from it.
type Environment struct {
	log     zerolog.Logger
	libPath string
	version string

	// life is held shared by each Load in progress and exclusively by
	// Close while it destroys the ONNX Runtime environment, so a Load never
	// runs against a destroyed environment.
	life sync.RWMutex

	// mu guards closed and sessions.
	mu       sync.Mutex
	closed   bool
	sessions map[*Session]struct{}
}

// liveMu guards live: the one open Environment of this process, if any.
var (
	liveMu sync.Mutex
	live   *Environment
)

// NewEnvironment loads the ONNX Runtime shared library and creates the
// environment. A missing or unusable library is an error (never a panic)
// that says how to get one. While another Environment is open it fails with
// an error wrapping ErrUnavailable.
func NewEnvironment(cfg EnvironmentConfig, logger zerolog.Logger) (*Environment, error) {
	log := logger.With().Str("component", "inference").Logger()
	path := cfg.LibraryPath
	if path == "" {
		path = os.Getenv(EnvLibraryPath)
	}
	if err := checkLibrary(path); err != nil {
		return nil, err
	}
	var opts []ort.EnvironmentOption
	switch cfg.LogLevel {
	case "", "warning":
		opts = append(opts, ort.WithLogLevelWarning())
	case "verbose":
		opts = append(opts, ort.WithLogLevelVerbose())
	case "info":
		opts = append(opts, ort.WithLogLevelInfo())
	case "error":
		opts = append(opts, ort.WithLogLevelError())
	case "fatal":
		opts = append(opts, ort.WithLogLevelFatal())
	default:
		return nil, fmt.Errorf("onnx runtime log level %q: want verbose, info, warning, error or fatal: %w", cfg.LogLevel, ErrInvalidArgument)
	}

	liveMu.Lock()
	defer liveMu.Unlock()
	if live != nil || ort.IsInitialized() {
		return nil, fmt.Errorf("an ONNX Runtime environment (%s) is already open in this process; close it first: %w", live.libPathOrUnknown(), ErrUnavailable)
	}
	if err := initializeORT(path, opts); err != nil {
		return nil, fmt.Errorf("load ONNX Runtime library %q: %v; %s: %w", path, err, setupHint, ErrUnavailable)
	}
	e := &Environment{
		log:      log,
		libPath:  path,
		version:  ort.GetVersion(),
		sessions: make(map[*Session]struct{}),
	}
	live = e
	log.Info().Str("library", path).Str("ort_version", e.version).Msg("onnx runtime environment ready")
	return e, nil
}

func (e *Environment) libPathOrUnknown() string {
	if e == nil {
		return "opened outside this package"
	}
	return e.libPath
}

// initializeORT calls into onnxruntime_go, turning a Go panic there into an
// error. (A crash inside C cannot be recovered; checkLibrary has already
// rejected files that are not the ONNX Runtime library.)
func initializeORT(path string, opts []ort.EnvironmentOption) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic while initializing: %v", r)
		}
	}()
	ort.SetSharedLibraryPath(path)
	return ort.InitializeEnvironment(opts...)
}

// checkLibrary rejects a path that cannot be ONNX Runtime before dlopen sees
// it: empty, missing, not a regular file, and on ELF systems not a shared
// object of this machine's architecture that exports OrtGetApiBase.
func checkLibrary(path string) error {
	if path == "" {
		return fmt.Errorf("no ONNX Runtime library configured; %s: %w", setupHint, ErrUnavailable)
	}
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("ONNX Runtime library %q does not exist; %s: %w", path, setupHint, ErrUnavailable)
		}
		return fmt.Errorf("ONNX Runtime library %q: %v; %s: %w", path, err, setupHint, ErrUnavailable)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("ONNX Runtime library %q is not a regular file; %s: %w", path, setupHint, ErrUnavailable)
	}
	if runtime.GOOS == "darwin" || runtime.GOOS == "windows" {
		return nil // Mach-O / PE: leave the check to the loader.
	}
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("ONNX Runtime library %q is not a shared library (%v); %s: %w", path, err, setupHint, ErrUnavailable)
	}
	defer f.Close()
	if want, ok := elfMachine[runtime.GOARCH]; ok && f.Machine != want {
		return fmt.Errorf("ONNX Runtime library %q is built for %v, this is %s; %s: %w", path, f.Machine, runtime.GOARCH, setupHint, ErrUnavailable)
	}
	syms, err := f.DynamicSymbols()
	if err != nil {
		return fmt.Errorf("ONNX Runtime library %q has no dynamic symbols (%v); %s: %w", path, err, setupHint, ErrUnavailable)
	}
	for _, s := range syms {
		if s.Name == "OrtGetApiBase" {
			return nil
		}
	}
	return fmt.Errorf("%q is a shared library but not ONNX Runtime (no OrtGetApiBase); %s: %w", path, setupHint, ErrUnavailable)
}

var elfMachine = map[string]elf.Machine{
	"amd64": elf.EM_X86_64,
	"arm64": elf.EM_AARCH64,
	"386":   elf.EM_386,
	"arm":   elf.EM_ARM,
}

// Version is the ONNX Runtime library's version string.
func (e *Environment) Version() string { return e.version }

// LibraryPath is the path the library was loaded from.
func (e *Environment) LibraryPath() string { return e.libPath }

// Close closes every session loaded from e that is still open (each waits
// for its in-flight runs), then destroys the environment. It is idempotent;
// after it returns another Environment may be created.
func (e *Environment) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	open := make([]*Session, 0, len(e.sessions))
	for s := range e.sessions {
		open = append(open, s)
	}
	e.mu.Unlock()

	var errs []error
	for _, s := range open {
		errs = append(errs, s.Close())
	}
	e.life.Lock() // wait for Loads in progress (they fail to register)
	defer e.life.Unlock()
	liveMu.Lock()
	defer liveMu.Unlock()
	if err := ort.DestroyEnvironment(); err != nil {
		errs = append(errs, fmt.Errorf("destroy onnx runtime environment: %w", err))
	}
	if live == e {
		live = nil
	}
	e.log.Info().Msg("onnx runtime environment closed")
	return errors.Join(errs...)
}

// register records s as open; it fails when e is closed.
func (e *Environment) register(s *Session) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return fmt.Errorf("onnx runtime environment is closed: %w", ErrUnavailable)
	}
	e.sessions[s] = struct{}{}
	return nil
}

func (e *Environment) unregister(s *Session) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.sessions, s)
}

// Closed reports whether Close has been called.
func (e *Environment) Closed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}
