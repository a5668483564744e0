package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"

	"github.com/edgeai/edge-node/cgo/pinned"
	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/pipeline"
	"github.com/edgeai/edge-node/internal/buildinfo"
	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/models/store"
	"github.com/edgeai/edge-node/node/admin"
	"github.com/edgeai/edge-node/node/kserve"
	"github.com/edgeai/edge-node/node/kserve/sysshm"
	"github.com/edgeai/edge-node/node/reconcile"
	"github.com/edgeai/edge-node/node/serving"
	"github.com/edgeai/edge-node/sync/chunker"
)

// Node is the daemon. Build it with New, run it with Run, stop it with Close.
type Node struct {
	cfg     Config
	trust   trust
	log     zerolog.Logger // component=node
	baseLog zerolog.Logger // the logger New was given: components add their own "component"

	reg    *prometheus.Registry
	pool   *pinned.Pool
	env    *inference.Environment
	store  *store.Store
	router *inference.Router
	// serving is the one owner of what is loaded and routed.
	serving *serving.Owner
	// rec takes desired state from every source and drives serving.
	rec *reconcile.Reconciler

	ln  net.Listener
	srv *http.Server
	// grpcLn and grpcSrv are the gRPC frontend (nil when grpc_addr is "").
	grpcLn  net.Listener
	grpcSrv *grpc.Server
	// httpSock and grpcSock are the Unix-domain socket listeners (nil
	// when not configured).
	httpSock, grpcSock net.Listener
	// shm holds the registered system shared-memory regions (nil when
	// the extension is off).
	shm *sysshm.Registry

	// cloud is the cloud link (nil when disabled or when the embedded
	// broker could not start: the node then serves offline).
	cloud *reconcile.Cloud
	// kubeedge runs the KubeEdge bridges (nil when none is enabled).
	kubeedge *kubeEdge
	// tracing exports the REST and gRPC frontends' spans (nil when
	// tracing.endpoint is "": the frontends then make none).
	tracing *tracing

	// bg runs the reconciler (and the KubeEdge change watcher); bgCancel
	// stops them.
	bgCancel context.CancelFunc
	bg       sync.WaitGroup

	// ownEnv is false when the Environment was handed in (newNode in tests):
	// then Close leaves it open for its owner.
	ownEnv bool

	// ready is true between the end of start-up and the start of shutdown.
	ready atomic.Bool
	// servingC is closed the first time ready turns true (Serving).
	servingC    chan struct{}
	servingOnce sync.Once

	closeOnce sync.Once
	closeErr  error
}

// New builds the node in dependency order — metrics, pinned pool, ONNX
// Runtime, store, models, HTTP listener — and closes what it opened when a
// step fails. Every Active version in the store (and the model repository,
// if configured) is loaded before New returns, with no network needed.
func New(ctx context.Context, cfg Config, logger zerolog.Logger) (*Node, error) {
	return newNode(ctx, cfg, logger, nil)
}

// newNode is New with an optional, already open ONNX Runtime Environment.
// Only one Environment may be live in a process, and the package's tests
// share one (inferencetest.Env) between the KServe handler tests and whole
// nodes; a node given env does not close it. The command always uses New.
func newNode(ctx context.Context, cfg Config, logger zerolog.Logger, env *inference.Environment) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{
		cfg:      cfg,
		log:      logger.With().Str("component", "node").Logger(),
		baseLog:  logger,
		reg:      prometheus.NewRegistry(),
		router:   inference.NewRouterWith(inference.RouterOptions{ShadowConcurrency: cfg.Rollout.ShadowConcurrency, Logger: logger}),
		env:      env,
		ownEnv:   env == nil,
		servingC: make(chan struct{}),
	}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	n.reg.MustRegister(buildinfo.Collector(), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), n.router.Collector())
	// The span exporter contacts nobody until the first batch is ready.
	if n.tracing, err = newTracing(cfg.Tracing, logger, n.reg); err != nil {
		return nil, err
	}

	popts := pinned.DefaultOptions()
	if cfg.Pinned.BudgetBytes > 0 {
		popts.Budget = cfg.Pinned.BudgetBytes
	}
	if cfg.Pinned.MaxWait > 0 {
		popts.MaxWait = cfg.Pinned.MaxWait
	}
	popts.DisableCUDA = cfg.Pinned.DisableCUDA
	popts.CUDARuntimePath = cfg.Pinned.CUDARuntime
	if n.pool, err = pinned.NewPool(popts, logger, n.reg); err != nil {
		return nil, fmt.Errorf("pinned buffers: %w", err)
	}

	if n.ownEnv {
		if n.env, err = inference.NewEnvironment(inference.EnvironmentConfig{LibraryPath: cfg.ORTLibrary}, logger); err != nil {
			return nil, err
		}
	}

	if n.trust, err = newTrust(cfg); err != nil {
		return nil, err
	}
	sopts := storeOptions(cfg, n.trust.ring)
	if n.store, err = store.Open(ctx, sopts, logger, n.reg); err != nil {
		return nil, err
	}
	if err := n.trust.load(ctx, n.store, logger); err != nil {
		return nil, err
	}
	pipelineMetrics, err := pipeline.NewMetrics(n.reg)
	if err != nil {
		return nil, err
	}
	n.serving = serving.New(serving.Config{Store: n.store, Router: n.router, Env: n.env,
		MemoryBudgetBytes: cfg.Rollout.MemoryBudgetBytes, EvalInterval: cfg.Rollout.EvalInterval,
		PipelineMetrics: pipelineMetrics}, logger)
	if err := n.reg.Register(n.serving.ModelsCollector()); err != nil {
		return nil, err
	}
	if err := n.serving.Boot(ctx, cfg.ModelRepository); err != nil {
		return nil, err
	}

	handler, err := n.newHandler()
	if err != nil {
		return nil, err
	}
	// The listener is opened here, not in Run, so that a port in use is a
	// start-up error and Addr is known before Run (tests use port 0).
	if n.ln, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("http_addr: %w", err)
	}
	n.srv = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          nil,
	}
	if err := n.openGRPC(); err != nil {
		return nil, err
	}
	if err := n.openSockets(); err != nil {
		return nil, err
	}
	// The cloud link and the reconciler start last, after the offline
	// boot: models are loaded and the listener is open before any
	// connection attempt, and an unreachable broker never blocks start-up
	// (the link connects in the background).
	if err := n.startReconcile(); err != nil {
		return nil, err
	}
	// The KubeEdge bridges start after the reconciler (they hand it
	// desired states) and, like it, never block start-up.
	if n.kubeedge, err = startKubeEdge(n); err != nil {
		return nil, err
	}
	n.log.Info().Str("version", buildinfo.Version()).Str("addr", n.ln.Addr().String()).Str("pinned_mode", n.pool.Mode().String()).
		Str("onnxruntime", n.env.Version()).Int("versions", len(n.router.Index())).Bool("cloud", n.cloud != nil).Msg("node started")
	return n, nil
}

// storeOptions are the model store's options for cfg, verifying manifests
// with keys: the node and the offline commands (ImportVersion, ListModels)
// open the store alike.
func storeOptions(cfg Config, keys models.Keys) store.Options {
	sopts := store.DefaultOptions(filepath.Join(cfg.DataDir, "store"))
	sopts.KeepVersions = cfg.Store.KeepVersions
	sopts.Verify = map[string]store.VerifyPolicy{"size": store.VerifySize, "active": store.VerifyFullActive, "full": store.VerifyFull}[cfg.Store.BootVerify]
	sopts.ValidateConfig = func(b []byte) error { _, err := serving.ParseModelConfig(b); return err }
	sopts.Graphless = serving.Graphless
	// Imported files are cut as the publisher cuts them (tensor-aligned
	// for an ONNX model), so a version from the cloud reuses every chunk
	// it shares with them. The store hands over the blob it opened.
	sopts.Chunker = func(r io.Reader) ([]models.ChunkRef, error) {
		f, ok := r.(*os.File)
		if !ok {
			return nil, fmt.Errorf("chunking an import: got a %T, not a file", r)
		}
		fi, err := f.Stat()
		if err != nil {
			return nil, err
		}
		_, cs, err := chunker.SplitModel(f, fi.Size(), nil)
		return cs, err
	}
	sopts.TrustedKeys = keys
	return sopts
}

// Addr is the HTTP listener's address.
func (n *Node) Addr() string { return n.ln.Addr().String() }

// ModelParameters implements kserve.ModelParameterizer: lineage and
// ensemble members from the serving owner.
func (n *Node) ModelParameters(ctx context.Context, model, version string) map[string]string {
	return n.serving.Parameters(ctx, model, version)
}

// Acquire implements kserve.Backend: the serving owner's sessions.
func (n *Node) Acquire(model, version string) (inference.Model, func(), error) {
	return n.serving.Acquire(model, version)
}

// Stats implements kserve.StatsReader (Triton's statistics extension): the
// counters of a routed version.
func (n *Node) Stats(model, version string) (inference.StatsSnapshot, error) {
	return n.serving.Stats(model, version)
}

// LoadModel implements kserve.RepositoryController (Triton's repository
// load) through the serving owner.
func (n *Node) LoadModel(ctx context.Context, model string) error {
	_, err := n.serving.Load(ctx, model)
	return err
}

// UnloadModel implements kserve.RepositoryController (Triton's repository
// unload): recorded by the serving owner as the model's override.
func (n *Node) UnloadModel(ctx context.Context, model string) error {
	return n.serving.Unload(ctx, model, serving.Admin{})
}

// Ready implements kserve.Backend: true once start-up finished, false again
// once shutdown began.
func (n *Node) Ready() bool { return n.ready.Load() }

// Serving is closed once Run has started every listener's server and
// Ready turned true: models are loaded and requests are answered (the
// command sends systemd's READY=1 then).
func (n *Node) Serving() <-chan struct{} { return n.servingC }

// Run serves HTTP until ctx is done, then stops intake and drains in-flight
// requests for up to Config.DrainTimeout. A cancelled ctx is a clean stop:
// Run returns ctx's error, which callers treat as success.
func (n *Node) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- n.srv.Serve(n.ln) }()
	grpcErr := n.serveGRPC() // nil (blocks forever) when gRPC is off
	n.serveSockets()
	n.ready.Store(true)
	n.servingOnce.Do(func() { close(n.servingC) })
	n.log.Info().Msg("ready")
	select {
	case err := <-errc:
		n.ready.Store(false)
		return fmt.Errorf("http server: %w", err)
	case err := <-grpcErr:
		n.ready.Store(false)
		return fmt.Errorf("grpc server: %w", err)
	case <-ctx.Done():
	}
	n.ready.Store(false)
	n.log.Info().Dur("drain_timeout", n.cfg.DrainTimeout).Msg("stopping: draining in-flight requests")
	dctx, cancel := context.WithTimeout(context.Background(), n.cfg.DrainTimeout)
	defer cancel()
	grpcDone := n.drainGRPC(dctx)
	if err := n.srv.Shutdown(dctx); err != nil {
		n.log.Warn().Err(err).Msg("drain deadline passed; closing remaining connections")
		n.srv.Close()
	}
	<-grpcDone
	// Every request has ended its spans: flush them within what is left
	// of the drain timeout.
	if n.tracing != nil {
		n.tracing.shutdown(dctx)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return ctx.Err()
}

// Close releases everything in reverse start-up order: HTTP server, model
// sessions (each after its in-flight requests), ONNX Runtime, store, pinned
// buffers. It is idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.ready.Store(false)
		var errs []error
		if n.srv != nil {
			errs = append(errs, ignoreClosed(n.srv.Close()))
		} else if n.ln != nil {
			errs = append(errs, n.ln.Close())
		}
		n.closeGRPC()
		n.closeSockets()
		if n.tracing != nil {
			// Already done by Run after a drain; otherwise (a failed
			// start-up, Close without Run) bounded by the drain timeout.
			tctx, cancel := context.WithTimeout(context.Background(), n.cfg.DrainTimeout)
			n.tracing.shutdown(tctx)
			cancel()
		}
		if n.shm != nil {
			n.shm.Close() // after the servers: no request uses a region any more
		}
		// Stop order: the KubeEdge bridges (they feed the reconciler), the
		// reconciler's workers, the cloud link (watcher, publisher, will,
		// broker), then the serving owner's rollouts (each retires its
		// candidate and records the abort), all before the router and the
		// store close.
		if n.kubeedge != nil {
			errs = append(errs, n.kubeedge.close())
		}
		if n.bgCancel != nil {
			n.bgCancel()
			n.bg.Wait()
		}
		if n.cloud != nil {
			errs = append(errs, n.cloud.Close())
		}
		if n.serving != nil {
			n.serving.Close()
		}
		if n.router != nil {
			errs = append(errs, n.router.Close())
		}
		if n.env != nil && n.ownEnv {
			errs = append(errs, n.env.Close())
		}
		if n.store != nil {
			errs = append(errs, n.store.Close())
		}
		if n.pool != nil {
			errs = append(errs, n.pool.Close())
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

func ignoreClosed(err error) error {
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// newHandler mounts the KServe v2 API, the admin API and /metrics on one mux.
func (n *Node) newHandler() (http.Handler, error) {
	opts := kserve.DefaultOptions()
	opts.MaxBodyBytes = n.cfg.MaxRequestBytes
	opts.Registerer = n.reg
	opts.EnablePprof = n.cfg.Pprof
	opts.NewAllocator = n.newAllocator
	opts.SharedMemory = n.sharedMemory()
	opts.RepositoryControl = n.cfg.RepositoryControl
	opts.RepositoryToken = n.cfg.AdminToken
	opts.AccessLogEvery = n.cfg.Log.AccessEvery
	if n.tracing != nil {
		opts.TracerProvider = n.tracing.tp
	}
	// baseLog, not n.log: the handler adds its own component=kserve.
	api, err := kserve.NewHandler(n, n.baseLog, opts)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{Registry: n.reg}))
	mux.Handle("/admin/", admin.New(n.serving, admin.Config{Token: n.cfg.AdminToken, UploadDir: filepath.Join(n.cfg.DataDir, "upload"),
		MaxUploadBytes: n.cfg.MaxRequestBytes}, n.baseLog))
	mux.Handle("/", api)
	return mux, nil
}

// newAllocator gives each request a lease on the pinned pool: its tensors
// live in pinned C memory, which ONNX Runtime reads and writes in place.
// Running out of pool budget is "unavailable" (503 with Retry-After).
func (n *Node) newAllocator() (inference.Allocator, func()) {
	l := n.pool.Lease()
	return leaseAllocator{l}, l.Release
}

type leaseAllocator struct{ l *pinned.Lease }

func (a leaseAllocator) Alloc(ctx context.Context, size int) ([]byte, error) {
	return leaseResult(a.l.Alloc(ctx, size))
}

// AllocOverwrite implements inference.OverwriteAllocator: no zeroing of a
// buffer the caller writes in full.
func (a leaseAllocator) AllocOverwrite(ctx context.Context, size int) ([]byte, error) {
	return leaseResult(a.l.AllocOverwrite(ctx, size))
}

func leaseResult(b []byte, err error) ([]byte, error) {
	if errors.Is(err, pinned.ErrExhausted) {
		return nil, fmt.Errorf("%w: %w", inference.ErrUnavailable, err)
	}
	return b, err
}

// Index implements kserve.ModelIndexer (POST /v2/repository/index): every
// version the store knows, in Triton's states. A version the router serves is
// READY; Loading and Warming are LOADING; anything else is UNAVAILABLE with
// its store state (and failure reason) as the reason. The listing is bounded
// by ctx (the request's) and 5 seconds.
func (n *Node) Index(ctx context.Context) []kserve.RepositoryEntry {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	vs, err := n.serving.Index(ctx)
	if err != nil {
		n.log.Warn().Err(err).Msg("repository index: listing the store")
		return nil
	}
	out := make([]kserve.RepositoryEntry, 0, len(vs))
	for _, v := range vs {
		st := kserve.RepositoryEntry{Name: v.Model, Version: v.Version, State: "UNAVAILABLE", Reason: string(v.State)}
		switch {
		case v.Serving:
			st.State, st.Reason = "READY", ""
		case v.State == models.Loading || v.State == models.Warming:
			st.State = "LOADING"
		case v.State == models.Failed:
			st.Reason = fmt.Sprintf("Failed(%s): %s", v.Reason, v.Detail)
		case v.State == models.Active:
			st.Reason = "unloaded" // by repository control: its override holds it
		}
		out = append(out, st)
	}
	return out
}
