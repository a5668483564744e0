package inference

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	ort "github.com/yalue/onnxruntime_go"
	"golang.org/x/sys/cpu"
)

// The optimized-model cache (SessionConfig.OptimizedModelCache): ONNX
// Runtime's graph optimisations run once per model file, ORT release and CPU,
// in a throwaway session on a thread of lower priority, and the optimised
// graph is saved beside the model; every load after that reads the saved
// graph with optimisation off. The rule is the TensorRT engines' one: built
// before the version is routed, never on the request path.

// optimizedDir is the cache's folder inside a model version's folder.
const optimizedDir = "ort_optimized"

// loadNice is the nice value of the thread that builds the optimised model
// (0 is normal, 19 the lowest priority).
const loadNice = 10

// optimizedPath is where the optimised form of the model at path is kept:
// keyed by the optimisation level, the ONNX Runtime release and the CPU's
// vector features (level "all" inserts layout transforms for the CPU it ran
// on, so the file is only valid there).
func (s *Session) optimizedPath(path string) string {
	level, _ := graphOptimizationLevel(s.cfg.GraphOptimization)
	name := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	return filepath.Join(filepath.Dir(path), optimizedDir,
		fmt.Sprintf("%s.level%d.ort%s.%s.onnx", name, level, s.env.version, cpuKey()))
}

// cpuKey names the CPU features ONNX Runtime's CPU kernels and layout
// transforms choose by.
func cpuKey() string {
	k := []string{runtime.GOARCH}
	add := func(ok bool, name string) {
		if ok {
			k = append(k, name)
		}
	}
	switch runtime.GOARCH {
	case "amd64":
		add(cpu.X86.HasAVX, "avx")
		add(cpu.X86.HasAVX2, "avx2")
		add(cpu.X86.HasFMA, "fma")
		add(cpu.X86.HasAVX512F, "avx512f")
		add(cpu.X86.HasAVX512BW, "avx512bw")
		add(cpu.X86.HasAVX512VNNI, "avx512vnni")
	case "arm64":
		add(cpu.ARM64.HasASIMD, "asimd")
		add(cpu.ARM64.HasASIMDDP, "dotprod")
		add(cpu.ARM64.HasFPHP, "fp16")
		add(cpu.ARM64.HasSVE, "sve")
	}
	return strings.Join(k, "-")
}

// ensureOptimized returns the optimised model for the model at path,
// building it when it is missing. built reports that this call built it.
func (s *Session) ensureOptimized(path string, inNames, outNames []string) (opt string, built bool, err error) {
	opt = s.optimizedPath(path)
	if fi, err := os.Stat(opt); err == nil && fi.Mode().IsRegular() && fi.Size() > 0 {
		return opt, false, nil
	}
	if err := os.MkdirAll(filepath.Dir(opt), 0o755); err != nil {
		return "", false, err
	}
	if err := atLowPriority(func() error { return s.writeOptimized(path, opt, inNames, outNames) }); err != nil {
		return "", false, err
	}
	return opt, true, nil
}

// atLowPriority runs fn at nice loadNice on an OS thread that ends with it
// (onLowPriorityThread) and waits for it; the caller's thread is untouched.
func atLowPriority(fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- onLowPriorityThread(fn) }()
	return <-done
}

// lowPriorityLoad reports whether the version's sessions and warm-up are
// made at nice loadNice: load_priority is not normal, and they can be
// without the priority reaching inference: one
// intra-op thread, no parallel execution and the CPU provider only, so
// ONNX Runtime starts no thread at load (its Runs execute on the callers'
// threads) and nothing created at low priority outlives the load.
func (s *Session) lowPriorityLoad() bool {
	return s.cfg.LoadPriority != "normal" && s.cfg.IntraOpThreads == 1 && s.cpuOnly()
}

// onLowPriorityThread runs fn on an OS thread of its own at nice loadNice;
// the thread ends with fn, so the lowered priority never reaches another
// goroutine. The session fn creates must start no thread of its own (one
// intra-op thread, sequential execution): a new thread would inherit the
// priority.
func onLowPriorityThread(fn func() error) error {
	runtime.LockOSThread()
	if onMainThread() {
		// The main thread is never ended (Go wedges it instead): leave it
		// as it is and run fn on another, which this lock keeps off it.
		done := make(chan error, 1)
		go func() { done <- onLowPriorityThread(fn) }()
		err := <-done
		runtime.UnlockOSThread()
		return err
	}
	// Never unlocked: Go ends a thread whose goroutine exits locked to it.
	lowerThreadPriority(loadNice)
	return fn()
}

// writeOptimized runs ONNX Runtime's optimisations on the model at path in
// a throwaway CPU session and saves the result at opt (through a temporary
// file, so a crash never leaves half a model under the final name).
func (s *Session) writeOptimized(path, opt string, inNames, outNames []string) error {
	tmp, err := os.CreateTemp(filepath.Dir(opt), ".optimizing-*.onnx")
	if err != nil {
		return err
	}
	tmpName := tmp.Name()
	tmp.Close()
	defer os.Remove(tmpName) // a no-op once renamed
	opts, err := ort.NewSessionOptions()
	if err != nil {
		return err
	}
	defer opts.Destroy()
	level, _ := graphOptimizationLevel(s.cfg.GraphOptimization)
	for _, set := range []func() error{
		func() error { return opts.SetIntraOpNumThreads(1) },
		func() error { return opts.SetExecutionMode(ort.ExecutionModeSequential) },
		func() error { return opts.SetGraphOptimizationLevel(ort.GraphOptimizationLevel(level)) },
		func() error { return opts.SetOptimizedModelFilePath(tmpName) },
	} {
		if err := set(); err != nil {
			return err
		}
	}
	ds, err := ort.NewDynamicAdvancedSession(path, inNames, outNames, opts)
	if err != nil {
		return err
	}
	if err := ds.Destroy(); err != nil {
		return err
	}
	f, err := os.Open(tmpName)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err == nil && fi.Size() == 0 {
		err = errors.New("onnx runtime wrote an empty optimized model")
	}
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	if err != nil {
		return err
	}
	return os.Rename(tmpName, opt)
}

// useOptimized returns the file to create the sessions from: the saved
// optimized model (built now when missing) with opts' graph optimisation
// switched off, or path itself when no optimized model can be had (logged:
// the load goes on as without the cache).
func (s *Session) useOptimized(path string, opts *ort.SessionOptions, inNames, outNames []string) (string, error) {
	opt, built, err := s.ensureOptimized(path, inNames, outNames)
	if err != nil {
		s.log.Warn().Err(err).Msg("cannot build the optimized model; loading the original")
		return path, nil
	}
	if err := opts.SetGraphOptimizationLevel(ort.GraphOptimizationLevel(0)); err != nil {
		return "", fmt.Errorf("session options: graph_optimization: %v: %w", err, ErrInvalidArgument)
	}
	s.optimized, s.optimizedBuilt = opt, built
	return opt, nil
}
