package eventbus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/sync/kubeedge"
)

// Config configures the EventBus bridge.
type Config struct {
	// Broker is EdgeCore's MQTT broker: tcp://127.0.0.1:1884 in internal
	// mode, usually tcp://127.0.0.1:1883 in external mode.
	Broker string `yaml:"broker"`
	// ClientID is the MQTT client id ("" picks edge-node-{name}).
	ClientID string `yaml:"client_id"`
	// Username and Password, when the broker wants them.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// DeviceNamespace and DeviceName name the Device that is this node.
	DeviceNamespace string `yaml:"device_namespace"`
	DeviceName      string `yaml:"device_name"`
	// ReportInterval is how often the node's status is looked at besides
	// after changes; a twin/update goes out only when a value changed.
	ReportInterval time.Duration `yaml:"report_interval"`
	// HeartbeatInterval is how often every twin is reported even when
	// nothing changed (EdgeCore writes each reported twin to the cloud).
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
}

// DefaultConfig returns a fresh Config for EdgeCore's internal broker.
func DefaultConfig() Config {
	return Config{Broker: "tcp://127.0.0.1:1884", DeviceNamespace: "default", ReportInterval: 30 * time.Second, HeartbeatInterval: 10 * time.Minute}
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	switch {
	case c.Broker == "":
		return errors.New("kubeedge eventbus: broker must be set")
	case c.DeviceNamespace == "" || c.DeviceName == "":
		return errors.New("kubeedge eventbus: device_namespace and device_name must be set")
	// The device id becomes topic levels: no wildcards, no extra levels.
	case !topicSafe(c.DeviceNamespace) || !topicSafe(c.DeviceName):
		return fmt.Errorf("kubeedge eventbus: device %s/%s: want [a-z0-9.-] (a Kubernetes name)", c.DeviceNamespace, c.DeviceName)
	case c.ReportInterval <= 0:
		return fmt.Errorf("kubeedge eventbus: report_interval must be positive, got %v", c.ReportInterval)
	case c.HeartbeatInterval <= 0:
		return fmt.Errorf("kubeedge eventbus: heartbeat_interval must be positive, got %v", c.HeartbeatInterval)
	}
	return nil
}

func topicSafe(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

// SourceName is the desired-state source the bridge applies as.
const SourceName = "kubeedge-eventbus"

// Bridge is the node on EdgeCore's EventBus. Build it with New, run it with
// Run, stop it with Close.
type Bridge struct {
	cfg    Config
	log    zerolog.Logger
	twin   *kubeedge.Twin
	topics Topics
	client mqtt.Client

	// inbox holds the latest desired values received and not yet applied
	// (later messages replace earlier ones: desired state, not commands);
	// wake signals that it is set. mu guards inbox.
	mu    sync.Mutex
	inbox []kubeedge.Property
	has   bool
	wake  chan struct{}
	kick  chan struct{}

	// last is the desired set last applied, filter what EdgeCore was last
	// sent (only Run's goroutine uses them); resend asks for every twin in
	// the next report (set on each connect: EdgeCore may have restarted).
	last   []kubeedge.Property
	filter kubeedge.ReportFilter
	resend atomic.Bool

	decodeErrors prometheus.Counter
	closeOnce    sync.Once
}

// New validates cfg and builds the bridge; it connects in Run. reg may be
// nil.
func New(cfg Config, applier kubeedge.Applier, logger zerolog.Logger, reg prometheus.Registerer) (*Bridge, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := logger.With().Str("component", "kubeedge-eventbus").Logger()
	b := &Bridge{
		cfg:    cfg,
		log:    log,
		twin:   kubeedge.NewTwin(applier, SourceName, log, reg),
		topics: DeviceTopics(cfg.DeviceNamespace, cfg.DeviceName),
		wake:   make(chan struct{}, 1),
		kick:   make(chan struct{}, 1),
		filter: kubeedge.ReportFilter{Heartbeat: cfg.HeartbeatInterval, Settle: cfg.ReportInterval},
		decodeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edge_kubeedge_eventbus_bad_messages_total",
			Help: "EventBus messages that did not decode.",
		}),
	}
	if reg != nil {
		if err := reg.Register(b.decodeErrors); err != nil {
			return nil, err
		}
	}
	id := cfg.ClientID
	if id == "" {
		id = "edge-node-" + cfg.DeviceName
	}
	opts := mqtt.NewClientOptions().AddBroker(cfg.Broker).SetClientID(id).
		SetUsername(cfg.Username).SetPassword(cfg.Password).
		SetCleanSession(true). // the full desired state is fetched (twin/get) on every connect
		SetAutoReconnect(true).SetConnectRetry(true).SetMaxReconnectInterval(30 * time.Second).
		SetOnConnectHandler(b.onConnect).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			b.log.Warn().Err(err).Msg("EventBus connection lost; reconnecting")
		})
	b.client = mqtt.NewClient(opts)
	return b, nil
}

// Twin is the bridge's twin.
func (b *Bridge) Twin() *kubeedge.Twin { return b.twin }

// RequestReport asks for a report of actual values now (the node calls it
// when a version changes state).
func (b *Bridge) RequestReport() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// onConnect subscribes to EdgeCore's topics and asks for the whole twin.
func (b *Bridge) onConnect(c mqtt.Client) {
	b.log.Info().Str("broker", b.cfg.Broker).Str("device", b.cfg.DeviceNamespace+"/"+b.cfg.DeviceName).Msg("connected to the EventBus")
	subs := map[string]byte{b.topics.Delta: 1, b.topics.GetResult: 1, b.topics.UpdateResult: 1}
	if t := c.SubscribeMultiple(subs, b.onMessage); t.Wait() && t.Error() != nil {
		b.log.Error().Err(t.Error()).Msg("subscribing to the twin topics")
		return
	}
	payload, err := EncodeGet(time.Now())
	if err != nil {
		b.log.Error().Err(err).Msg("encoding twin/get")
		return
	}
	c.Publish(b.topics.Get, 1, false, payload)
	b.resend.Store(true)
	b.RequestReport()
}

// onMessage runs on paho's goroutine: it only decodes and hands the desired
// values to Run's goroutine (applying can take as long as a download).
func (b *Bridge) onMessage(_ mqtt.Client, msg mqtt.Message) {
	var props []kubeedge.Property
	switch msg.Topic() {
	case b.topics.Delta:
		d, err := DecodeDelta(msg.Payload())
		if err != nil {
			b.badMessage(msg.Topic(), err)
			return
		}
		props = Desired(d.Twin, d.Delta)
	case b.topics.GetResult:
		r, err := DecodeTwinResult(msg.Payload())
		if err != nil {
			b.badMessage(msg.Topic(), err)
			return
		}
		props = Desired(r.Twin, nil)
	case b.topics.UpdateResult:
		if _, err := DecodeTwinResult(msg.Payload()); err != nil {
			b.badMessage(msg.Topic(), err)
		}
		return
	default:
		return
	}
	b.mu.Lock()
	b.inbox, b.has = props, true
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

func (b *Bridge) badMessage(topic string, err error) {
	b.decodeErrors.Inc()
	b.log.Warn().Err(err).Str("topic", topic).Msg("EventBus message refused")
}

// Run connects (retrying until the broker answers) and applies desired
// values as they arrive, until ctx ends; it returns ctx's error then. After
// each change and every ReportInterval it looks at the node's status and
// reports what changed (every twin after a connect and once per
// HeartbeatInterval).
func (b *Bridge) Run(ctx context.Context) error {
	b.client.Connect() // with ConnectRetry, keeps trying in the background
	tick := time.NewTicker(b.cfg.ReportInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-b.wake:
			b.mu.Lock()
			props, has := b.inbox, b.has
			b.inbox, b.has = nil, false
			b.mu.Unlock()
			// EdgeCore sends a delta after each of our reports while
			// actual differs from expected (a rollout under way): the
			// same desired set again is not a change.
			if !has || (b.last != nil && slices.Equal(props, b.last)) {
				continue
			}
			b.last = props
			if err := b.twin.SetDesired(ctx, props); err != nil {
				var re *kubeedge.RejectedError
				if !errors.As(err, &re) {
					b.log.Warn().Err(err).Msg("applying the desired state")
				}
			}
		case <-tick.C:
			if err := b.twin.Retry(ctx); err != nil {
				b.log.Warn().Err(err).Msg("re-applying the desired state")
			}
		case <-b.kick:
		}
		if err := b.report(ctx); err != nil && ctx.Err() == nil {
			b.log.Warn().Err(err).Msg("reporting actual values")
		}
	}
}

func (b *Bridge) report(ctx context.Context) error {
	if !b.client.IsConnectionOpen() {
		return nil // onConnect asks for a report
	}
	if b.resend.Swap(false) {
		b.filter.Reset()
	}
	vals, err := b.twin.Report(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	r := b.filter.Next(vals, now)
	if len(r.Values) == 0 {
		return nil
	}
	payload, err := EncodeReport(r.Values, now)
	if err != nil {
		return err
	}
	t := b.client.Publish(b.topics.Update, 1, false, payload)
	select {
	case <-t.Done():
		if err := t.Error(); err != nil {
			b.resend.Store(true) // not known to have arrived
			return err
		}
		b.filter.Sent(r, now)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close disconnects. It is idempotent.
func (b *Bridge) Close() error {
	b.closeOnce.Do(func() { b.client.Disconnect(250) })
	return nil
}
