// Package dmi connects the node to KubeEdge's EdgeCore as a DMI mapper
// (KubeEdge v1beta1 device management interface, github.com/kubeedge/api
// apis/dmi/v1beta1): the node registers with EdgeCore over EdgeCore's unix
// socket (MapperRegister), serves DeviceMapperService on its own unix
// socket, and is the device for one Device resource. RegisterDevice and
// UpdateDevice carry the Device's desired property values, which go to the
// node's reconciler through kubeedge.Twin exactly like an MQTT desired
// state; ReportDeviceStatus carries the reported values back.
//
// Start-up: New opens the mapper socket (so a path in use is a start-up
// error); Run serves it, registers with EdgeCore (retrying with backoff
// until EdgeCore answers: it may start after the node), applies the
// Device found in the registration answer, then reports status after every
// change, looking again every Config.ReportInterval (only changed twins go
// out, every twin once per Config.HeartbeatInterval). A failed report
// makes the mapper register again before the next one: EdgeCore may have
// restarted and forgotten it. Close stops the server and
// removes the socket.
package dmi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	dmiapi "github.com/kubeedge/api/apis/dmi/v1beta1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/edgeai/edge-node/errdefs"
	"github.com/edgeai/edge-node/internal/buildinfo"
	"github.com/edgeai/edge-node/sync/kubeedge"
)

// Config configures the mapper.
type Config struct {
	// EdgeCoreSocket is EdgeCore's DMI socket (DeviceManagerService).
	EdgeCoreSocket string `yaml:"edgecore_socket"`
	// Socket is the mapper's own socket (DeviceMapperService), sent to
	// EdgeCore in MapperRegister.
	Socket string `yaml:"socket"`
	// MapperName names the mapper to EdgeCore.
	MapperName string `yaml:"mapper_name"`
	// Protocol is the protocol name Devices and DeviceModels of this mapper
	// carry (spec.protocol); EdgeCore routes devices to mappers by it.
	Protocol string `yaml:"protocol"`
	// DeviceNamespace and DeviceName name the Device resource that is this
	// node (in a DaemonSet: one Device per edge node, named after it).
	DeviceNamespace string `yaml:"device_namespace"`
	DeviceName      string `yaml:"device_name"`
	// ReportInterval is how often the node looks at its status besides
	// after changes; a report goes out only when a value changed.
	ReportInterval time.Duration `yaml:"report_interval"`
	// HeartbeatInterval is how often every twin is reported even when
	// nothing changed (EdgeCore sends each twin as its own DeviceStatus
	// update, so this is kept slow).
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// Version is the node's version, sent in MapperRegister.
	Version string `yaml:"-"`
}

// DefaultConfig returns a fresh Config with KubeEdge's default socket and
// the node's protocol name.
func DefaultConfig() Config {
	return Config{
		EdgeCoreSocket:    "/etc/kubeedge/dmi.sock",
		Socket:            "/etc/kubeedge/edge-node.sock",
		MapperName:        "edge-node",
		Protocol:          "edge-node",
		DeviceNamespace:   "default",
		ReportInterval:    30 * time.Second,
		HeartbeatInterval: 10 * time.Minute,
		Version:           buildinfo.Version(),
	}
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	switch {
	case c.EdgeCoreSocket == "" || c.Socket == "":
		return errors.New("kubeedge dmi: edgecore_socket and socket must be set")
	case c.EdgeCoreSocket == c.Socket:
		return errors.New("kubeedge dmi: socket must differ from edgecore_socket")
	case c.MapperName == "" || c.Protocol == "":
		return errors.New("kubeedge dmi: mapper_name and protocol must be set")
	case c.DeviceNamespace == "" || c.DeviceName == "":
		return errors.New("kubeedge dmi: device_namespace and device_name must be set")
	case c.ReportInterval <= 0:
		return fmt.Errorf("kubeedge dmi: report_interval must be positive, got %v", c.ReportInterval)
	case c.HeartbeatInterval <= 0:
		return fmt.Errorf("kubeedge dmi: heartbeat_interval must be positive, got %v", c.HeartbeatInterval)
	}
	return nil
}

// SourceName is the desired-state source the mapper applies as.
const SourceName = "kubeedge-dmi"

// Mapper is the node as a DMI mapper. Build it with New, run it with Run,
// stop it with Close.
type Mapper struct {
	dmiapi.UnimplementedDeviceMapperServiceServer

	cfg  Config
	log  zerolog.Logger
	twin *kubeedge.Twin

	ln  net.Listener
	srv *grpc.Server
	// kick asks the report loop for a report now (buffered, coalescing).
	kick chan struct{}

	// callLog logs EdgeCore's calls at Info, at most 10 lines a second.
	callLog zerolog.Logger

	// mu guards conn and client.
	mu     sync.Mutex
	conn   *grpc.ClientConn
	client dmiapi.DeviceManagerServiceClient

	// filter is owned by the report loop: what EdgeCore was last sent (a
	// report carries only what changed, every twin once per heartbeat).
	filter kubeedge.ReportFilter
	// reregister is set by a failed report or by the connection watcher
	// (EdgeCore's socket went away and came back).
	reregister atomic.Bool

	closeOnce sync.Once
	closeErr  error
}

// New validates cfg, opens the mapper socket (a stale socket file from an
// earlier run is removed; any other file there is an error) and returns the
// mapper. reg may be nil.
func New(cfg Config, applier kubeedge.Applier, logger zerolog.Logger, reg prometheus.Registerer) (*Mapper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := logger.With().Str("component", "kubeedge-dmi").Logger()
	m := &Mapper{
		cfg:     cfg,
		log:     log,
		twin:    kubeedge.NewTwin(applier, SourceName, log, reg),
		kick:    make(chan struct{}, 1),
		filter:  kubeedge.ReportFilter{Heartbeat: cfg.HeartbeatInterval, Settle: cfg.ReportInterval},
		callLog: log.Sample(&zerolog.BurstSampler{Burst: 10, Period: time.Second}),
	}
	if err := removeStaleSocket(cfg.Socket); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", cfg.Socket)
	if err != nil {
		return nil, fmt.Errorf("kubeedge dmi: mapper socket: %w", err)
	}
	m.ln = ln
	// Device messages are small; 1 MiB is far above any legal Device
	// (properties are bounded by the twin limits) and far below the default.
	m.srv = grpc.NewServer(grpc.MaxRecvMsgSize(1 << 20))
	dmiapi.RegisterDeviceMapperServiceServer(m.srv, m)
	return m, nil
}

func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("kubeedge dmi: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("kubeedge dmi: %s exists and is not a socket", path)
	}
	return os.Remove(path)
}

// Twin is the mapper's twin (for status and tests).
func (m *Mapper) Twin() *kubeedge.Twin { return m.twin }

// Run serves the mapper socket, registers with EdgeCore and reports until
// ctx ends; it returns ctx's error then.
func (m *Mapper) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- m.srv.Serve(m.ln) }()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := m.register(ctx); err != nil {
			return // ctx ended
		}
		wg.Add(1)
		go func() { defer wg.Done(); m.watchConn(ctx) }()
		m.reportLoop(ctx)
	}()
	var err error
	select {
	case err = <-errc:
		err = fmt.Errorf("kubeedge dmi: serving %s: %w", m.cfg.Socket, err)
	case <-ctx.Done():
		err = ctx.Err()
	}
	m.srv.Stop()
	wg.Wait()
	return err
}

// register calls MapperRegister until EdgeCore answers (backoff 1s → 30s),
// then applies this node's Device from the answer.
//
// It is called again when a report fails (EdgeCore restarted: its socket
// went away, or it no longer knows the mapper), over the same connection,
// which gRPC re-dials.
func (m *Mapper) register(ctx context.Context) error {
	m.mu.Lock()
	if m.conn == nil {
		conn, err := grpc.NewClient("unix://"+m.cfg.EdgeCoreSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			m.mu.Unlock()
			return err // only for a malformed target; cannot happen with unix://
		}
		m.conn, m.client = conn, dmiapi.NewDeviceManagerServiceClient(conn)
	}
	client := m.client
	m.mu.Unlock()

	req := &dmiapi.MapperRegisterRequest{
		WithData: true,
		Mapper: &dmiapi.MapperInfo{
			Name:       m.cfg.MapperName,
			Version:    m.cfg.Version,
			ApiVersion: "v1beta1",
			Protocol:   m.cfg.Protocol,
			Address:    []byte(m.cfg.Socket),
			State:      "ok",
		},
	}
	backoff := time.Second
	for {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := client.MapperRegister(rctx, req)
		cancel()
		if err == nil {
			m.log.Info().Str("edgecore", m.cfg.EdgeCoreSocket).Int("devices", len(resp.GetDeviceList())).Msg("registered with EdgeCore")
			for _, d := range resp.GetDeviceList() {
				if m.ours(d.GetNamespace(), d.GetName()) {
					m.apply(ctx, d)
				}
			}
			m.RequestReport()
			return nil
		}
		m.log.Warn().Err(err).Dur("retry_in", backoff).Msg("EdgeCore registration failed")
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// watchConn watches the EdgeCore connection: when it goes down after
// being up (EdgeCore stopped, its socket went away) it is re-dialled, and
// once up again the mapper registers again (a restarted EdgeCore may have
// forgotten it) and reports every twin. An idle connection closed by gRPC
// and re-dialled also re-registers, which is harmless.
func (m *Mapper) watchConn(ctx context.Context) {
	m.mu.Lock()
	conn := m.conn
	m.mu.Unlock()
	up, down := false, false
	for {
		s := conn.GetState()
		switch s {
		case connectivity.Ready:
			if down {
				m.log.Info().Str("edgecore", m.cfg.EdgeCoreSocket).Msg("EdgeCore connection back: registering again")
				m.reregister.Store(true)
				m.RequestReport()
			}
			up, down = true, false
		case connectivity.Idle, connectivity.TransientFailure:
			if up && !down {
				m.log.Warn().Str("edgecore", m.cfg.EdgeCoreSocket).Str("state", s.String()).Msg("EdgeCore connection lost")
				down = true
			}
			if s == connectivity.Idle {
				conn.Connect()
			}
		case connectivity.Shutdown:
			return
		}
		if !conn.WaitForStateChange(ctx, s) {
			return
		}
	}
}

// RequestReport asks for a status report now (the node calls it when a
// version changes state; reports also go out every ReportInterval).
func (m *Mapper) RequestReport() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

func (m *Mapper) reportLoop(ctx context.Context) {
	tick := time.NewTicker(m.cfg.ReportInterval)
	defer tick.Stop()
	retry := time.Second // after a failed report, doubling to 30s
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if err := m.twin.Retry(ctx); err != nil {
				m.log.Warn().Err(err).Msg("re-applying the desired state")
			}
		case <-m.kick:
		}
		if m.reregister.Load() {
			m.log.Info().Msg("registering with EdgeCore again (a report failed or the connection came back: it may have restarted)")
			if err := m.register(ctx); err != nil {
				return // ctx ended
			}
			m.reregister.Store(false)
			m.filter.Reset() // a restarted EdgeCore gets every twin
		}
		err := m.report(ctx)
		if err == nil {
			retry = time.Second
			continue
		}
		if ctx.Err() != nil {
			return
		}
		m.log.Warn().Err(err).Dur("retry_in", retry).Msg("reporting device status")
		m.reregister.Store(true)
		m.RequestReport()
		select { // do not spin while EdgeCore is down or keeps refusing
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
		retry = min(2*retry, 30*time.Second)
	}
}

// report sends, in one ReportDeviceStatus, the twins whose values changed
// since the last report, a cleared value (kubeedge.ClearedValue) for twins
// no longer reported, and every twin once per HeartbeatInterval. Nothing
// is sent when nothing changed: EdgeCore turns each twin into its own
// DeviceStatus update, and refuses a report without twins. Every twin
// carries ObservedDesired (empty when nothing is desired): EdgeCore reads
// it unchecked.
func (m *Mapper) report(ctx context.Context) error {
	vals, err := m.twin.Report(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	r := m.filter.Next(vals, now)
	if len(r.Values) == 0 {
		return nil
	}
	ms := strconv.FormatInt(now.UnixMilli(), 10)
	meta := func(name string) map[string]string {
		return map[string]string{"timestamp": ms, "type": kubeedge.ValueType(name)}
	}
	twins := make([]*dmiapi.Twin, 0, len(r.Values))
	for _, v := range r.Values {
		twins = append(twins, &dmiapi.Twin{PropertyName: v.Name,
			ObservedDesired: &dmiapi.TwinProperty{Value: v.ObservedDesired, Metadata: meta(v.Name)},
			Reported:        &dmiapi.TwinProperty{Value: v.Reported, Metadata: meta(v.Name)}})
	}
	m.mu.Lock()
	client := m.client
	m.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = client.ReportDeviceStatus(rctx, &dmiapi.ReportDeviceStatusRequest{
		DeviceName:      m.cfg.DeviceName,
		DeviceNamespace: m.cfg.DeviceNamespace,
		ReportedDevice:  &dmiapi.DeviceStatus{Twins: twins, ReportToCloud: true, ReportCycle: m.cfg.ReportInterval.Milliseconds()},
	})
	if err != nil {
		return err
	}
	m.filter.Sent(r, now)
	return nil
}

func (m *Mapper) ours(namespace, name string) bool {
	return namespace == m.cfg.DeviceNamespace && name == m.cfg.DeviceName
}

func (m *Mapper) check(d *dmiapi.Device) error {
	if d == nil {
		return status.Error(codes.InvalidArgument, "no device in the request")
	}
	if !m.ours(d.GetNamespace(), d.GetName()) {
		return status.Errorf(codes.NotFound, "device %s/%s is not this node (%s/%s)", d.GetNamespace(), d.GetName(), m.cfg.DeviceNamespace, m.cfg.DeviceName)
	}
	return nil
}

// apply hands the Device's desired values to the twin. Refusals are not
// errors to EdgeCore: they are reported in the twin (M.state Rejected).
func (m *Mapper) apply(ctx context.Context, d *dmiapi.Device) error {
	if p := d.GetSpec().GetProtocol().GetProtocolName(); p != "" && p != m.cfg.Protocol {
		m.log.Warn().Str("protocol", p).Str("want", m.cfg.Protocol).Msg("device protocol differs from the mapper's")
	}
	props := d.GetSpec().GetProperties()
	in := make([]kubeedge.Property, 0, len(props))
	for _, p := range props {
		in = append(in, kubeedge.Property{Name: p.GetName(), Value: p.GetDesired().GetValue()})
	}
	err := m.twin.SetDesired(ctx, in)
	m.RequestReport()
	var re *kubeedge.RejectedError
	if err != nil && !errors.As(err, &re) {
		return status.Errorf(retryCode(err), "applying the desired state: %v", err)
	}
	return nil
}

// RegisterDevice implements DeviceMapperServiceServer.
func (m *Mapper) RegisterDevice(ctx context.Context, req *dmiapi.RegisterDeviceRequest) (*dmiapi.RegisterDeviceResponse, error) {
	d := req.GetDevice()
	m.callLog.Info().Str("device", d.GetNamespace()+"/"+d.GetName()).Int("properties", len(d.GetSpec().GetProperties())).Msg("EdgeCore: RegisterDevice")
	if err := m.check(d); err != nil {
		return nil, err
	}
	if err := m.apply(ctx, d); err != nil {
		return nil, err
	}
	return &dmiapi.RegisterDeviceResponse{DeviceName: d.GetName(), DeviceNamespace: d.GetNamespace()}, nil
}

// UpdateDevice implements DeviceMapperServiceServer.
func (m *Mapper) UpdateDevice(ctx context.Context, req *dmiapi.UpdateDeviceRequest) (*dmiapi.UpdateDeviceResponse, error) {
	d := req.GetDevice()
	m.callLog.Info().Str("device", d.GetNamespace()+"/"+d.GetName()).Int("properties", len(d.GetSpec().GetProperties())).Msg("EdgeCore: UpdateDevice")
	if err := m.check(d); err != nil {
		return nil, err
	}
	if err := m.apply(ctx, d); err != nil {
		return nil, err
	}
	return &dmiapi.UpdateDeviceResponse{}, nil
}

// RemoveDevice implements DeviceMapperServiceServer: the Device is gone, so
// KubeEdge no longer wants anything of this node; the reconciler decides
// what that means for models that serve (other sources may still want
// them).
func (m *Mapper) RemoveDevice(ctx context.Context, req *dmiapi.RemoveDeviceRequest) (*dmiapi.RemoveDeviceResponse, error) {
	if !m.ours(req.GetDeviceNamespace(), req.GetDeviceName()) {
		return nil, status.Errorf(codes.NotFound, "device %s/%s is not this node", req.GetDeviceNamespace(), req.GetDeviceName())
	}
	m.log.Info().Msg("device removed: withdrawing the KubeEdge desired state")
	if err := m.twin.SetDesired(ctx, nil); err != nil {
		return nil, status.Errorf(retryCode(err), "withdrawing the desired state: %v", err)
	}
	return &dmiapi.RemoveDeviceResponse{}, nil
}

// GetDevice implements DeviceMapperServiceServer: the Device with the
// node's reported values.
func (m *Mapper) GetDevice(ctx context.Context, req *dmiapi.GetDeviceRequest) (*dmiapi.GetDeviceResponse, error) {
	if !m.ours(req.GetDeviceNamespace(), req.GetDeviceName()) {
		return nil, status.Errorf(codes.NotFound, "device %s/%s is not this node", req.GetDeviceNamespace(), req.GetDeviceName())
	}
	vals, err := m.twin.Report(ctx)
	if err != nil {
		return nil, status.Errorf(retryCode(err), "node status: %v", err)
	}
	st := &dmiapi.DeviceStatus{ReportToCloud: true}
	for _, v := range vals {
		st.Twins = append(st.Twins, &dmiapi.Twin{PropertyName: v.Name,
			ObservedDesired: &dmiapi.TwinProperty{Value: v.ObservedDesired},
			Reported:        &dmiapi.TwinProperty{Value: v.Reported}})
	}
	return &dmiapi.GetDeviceResponse{Device: &dmiapi.Device{Name: m.cfg.DeviceName, Namespace: m.cfg.DeviceNamespace, Status: st}}, nil
}

// CreateDeviceModel implements DeviceMapperServiceServer. The node's schema
// is fixed (package kubeedge), so device models are acknowledged only.
func (m *Mapper) CreateDeviceModel(_ context.Context, req *dmiapi.CreateDeviceModelRequest) (*dmiapi.CreateDeviceModelResponse, error) {
	m.callLog.Info().Str("device_model", req.GetModel().GetNamespace()+"/"+req.GetModel().GetName()).Msg("EdgeCore: CreateDeviceModel")
	return &dmiapi.CreateDeviceModelResponse{DeviceModelName: req.GetModel().GetName(), DeviceModelNamespace: req.GetModel().GetNamespace()}, nil
}

// UpdateDeviceModel implements DeviceMapperServiceServer (acknowledged only).
func (m *Mapper) UpdateDeviceModel(context.Context, *dmiapi.UpdateDeviceModelRequest) (*dmiapi.UpdateDeviceModelResponse, error) {
	return &dmiapi.UpdateDeviceModelResponse{}, nil
}

// RemoveDeviceModel implements DeviceMapperServiceServer (acknowledged only).
func (m *Mapper) RemoveDeviceModel(context.Context, *dmiapi.RemoveDeviceModelRequest) (*dmiapi.RemoveDeviceModelResponse, error) {
	return &dmiapi.RemoveDeviceModelResponse{}, nil
}

// Close stops the gRPC server, closes the EdgeCore connection and removes
// the mapper socket. It is idempotent.
func (m *Mapper) Close() error {
	m.closeOnce.Do(func() {
		m.srv.Stop()
		var errs []error
		if err := m.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
		m.mu.Lock()
		if m.conn != nil {
			errs = append(errs, m.conn.Close())
		}
		m.mu.Unlock()
		if err := os.Remove(m.cfg.Socket); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
		m.closeErr = errors.Join(errs...)
	})
	return m.closeErr
}

// retryCode is the gRPC code EdgeCore gets for a failed call: the one error
// mapping (errdefs) where the error says what it is, Unavailable (try
// again) for anything else.
func retryCode(err error) codes.Code {
	if c := errdefs.GRPCCode(err); c != codes.Unknown && c != codes.Internal {
		return c
	}
	return codes.Unavailable
}
