// Package mqttlink is the node's (and edgectl's) MQTT session with the broker,
// built on github.com/eclipse/paho.mqtt.golang (MQTT 3.1.1): TLS and mutual
// TLS, username/password, a stable client id with a persistent session
// (CleanSession false) so QoS 1 messages queue while offline, reconnection
// with exponential backoff and jitter, a Last Will, subscriptions restored on
// every reconnect, and the flushing of an outbox of reports (kept by the
// caller: the node's model store), in order, after each reconnect; and a
// bound on what one incoming message can cost (Config.MaxMessageBytes,
// enforced below paho, which buffers whole packets: limit.go).
//
// Start-up order: New → Subscribe (any number, before or after Run) → Run(ctx)
// in a goroutine. Shutdown: cancel Run's context (Run publishes the will
// payload itself, since a clean DISCONNECT makes the broker discard the will,
// then disconnects) → Close.
package mqttlink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/sync/wire"
)

// ErrNotConnected is returned by Publish and Subscribe calls that need the
// broker while the link is down.
var ErrNotConnected = errors.New("mqttlink: not connected")

// Outbox is the durable queue of reports that the link flushes (the node
// adapts its model store's outbox of reports to it). The owner appends to it
// by its own means and calls KickOutbox. ctx bounds each call.
type Outbox interface {
	// Oldest returns up to n messages, oldest first.
	Oldest(ctx context.Context, n int) ([]OutboxMessage, error)
	// Remove deletes an acknowledged message.
	Remove(ctx context.Context, seq uint64) error
	// Len is the number of queued messages.
	Len(ctx context.Context) (int, error)
}

// TLSFiles names PEM files for TLS. CAFile alone gives server-verified TLS;
// CertFile and KeyFile add a client certificate (mutual TLS).
type TLSFiles struct {
	CAFile     string
	CertFile   string
	KeyFile    string
	ServerName string // overrides the host name checked in the server certificate
}

// Config configures a Link. DefaultConfig gives the defaults.
type Config struct {
	// BrokerURL is tcp://host:port, ssl://host:port or tls://host:port.
	BrokerURL string
	// ClientID must be stable across restarts (the broker keys the
	// persistent session on it).
	ClientID string
	Username string
	Password string
	// TLS, if any file is set, is loaded into the TLS config.
	TLS TLSFiles
	// TLSConfig, when set, is used as is (overrides TLS).
	TLSConfig *tls.Config
	// CleanSession false (the default) keeps subscriptions and queued QoS 1
	// messages at the broker while the client is away.
	CleanSession bool
	KeepAlive    time.Duration
	// ConnectTimeout bounds one connection attempt.
	ConnectTimeout time.Duration
	// BackoffMin and BackoffMax bound the delay between attempts; the delay
	// doubles after each failure and is jittered into [d/2, d).
	BackoffMin time.Duration
	BackoffMax time.Duration
	// Will, when set, is registered as the Last Will (QoS 1).
	Will *Message
	// OutboxBatch is how many outbox messages are read at a time.
	OutboxBatch int
	// MaxMessageBytes bounds one incoming PUBLISH (its Remaining Length:
	// topic, packet id and payload); a larger one is discarded as it
	// streams, never buffered, and reported to OnOversize (limit.go).
	// 0 means DefaultMaxMessageBytes; at least MinMaxMessageBytes.
	MaxMessageBytes int64
	// OnOversize, when set, is told of each discarded message (its topic and
	// payload size); when nil the link logs it.
	OnOversize func(topic string, size int64)
}

// Message is a topic, payload and retain flag.
type Message struct {
	Topic    string
	Payload  []byte
	Retained bool
}

// OutboxMessage is one queued report: Seq orders the queue and names the
// message to Remove once the broker acknowledged it.
type OutboxMessage struct {
	Seq      uint64
	Topic    string
	Retained bool
	Payload  []byte
}

// DefaultConfig returns a fresh Config with the defaults.
func DefaultConfig() Config {
	return Config{
		KeepAlive:      30 * time.Second,
		ConnectTimeout: 10 * time.Second,
		BackoffMin:     500 * time.Millisecond,
		BackoffMax:     time.Minute,
		OutboxBatch:    64,

		MaxMessageBytes: DefaultMaxMessageBytes,
	}
}

// Handler receives a message on a subscribed topic. Handlers run
// concurrently (one goroutine per in-flight message, bounded by the broker's
// in-flight window); the message is acknowledged when the handler returns.
// A handler must not block for long; it may call Subscribe/Unsubscribe.
type Handler func(topic string, payload []byte)

type metrics struct {
	connected     prometheus.Gauge
	connects      prometheus.Counter
	connectErrors prometheus.Counter
	received      prometheus.Counter
	outboxDepth   prometheus.Gauge
	outboxSent    prometheus.Counter
	oversize      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connected:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "edge_link_connected", Help: "1 while the MQTT session is up."}),
		connects:      prometheus.NewCounter(prometheus.CounterOpts{Name: "edge_link_connects_total", Help: "Successful MQTT connections."}),
		connectErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "edge_link_connect_errors_total", Help: "Failed MQTT connection attempts."}),
		received:      prometheus.NewCounter(prometheus.CounterOpts{Name: "edge_link_messages_received_total", Help: "MQTT messages received."}),
		outboxDepth:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "edge_link_outbox_depth", Help: "Reports queued in the outbox."}),
		outboxSent:    prometheus.NewCounter(prometheus.CounterOpts{Name: "edge_link_outbox_sent_total", Help: "Reports delivered from the outbox."}),
		oversize:      prometheus.NewCounter(prometheus.CounterOpts{Name: "edge_link_oversize_discarded_total", Help: "Incoming MQTT messages over the message limit, discarded unread."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.connected, m.connects, m.connectErrors, m.received, m.outboxDepth, m.outboxSent, m.oversize} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

type fallback struct {
	filter string
	h      Handler
}

// Link is one MQTT session. Its methods are safe for concurrent use.
type Link struct {
	cfg    Config
	client paho.Client
	log    zerolog.Logger
	m      *metrics
	outbox Outbox

	mu       sync.Mutex         // guards the fields below
	handlers map[string]Handler // filter -> handler
	fallback []fallback         // for messages no handler's filter matches
	up       bool               // session established
	upCh     chan struct{}      // closed while up; replaced when down
	onUp     []func()           // called after every (re)connect
	lostCh   chan struct{}      // signalled by the connection-lost handler

	kick chan struct{} // wakes the outbox flusher
}

// New builds a Link; nothing touches the network until Run. ob may be nil
// (nothing is flushed).
func New(cfg Config, ob Outbox, log zerolog.Logger, reg prometheus.Registerer) (*Link, error) {
	def := DefaultConfig()
	if cfg.BrokerURL == "" || cfg.ClientID == "" {
		return nil, fmt.Errorf("mqttlink: BrokerURL and ClientID are required")
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = def.KeepAlive
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = def.ConnectTimeout
	}
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin = def.BackoffMin
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = max(def.BackoffMax, cfg.BackoffMin)
	}
	if cfg.OutboxBatch <= 0 {
		cfg.OutboxBatch = def.OutboxBatch
	}
	if cfg.MaxMessageBytes == 0 {
		cfg.MaxMessageBytes = def.MaxMessageBytes
	}
	if cfg.MaxMessageBytes < MinMaxMessageBytes {
		return nil, fmt.Errorf("mqttlink: MaxMessageBytes %d under the minimum %d (the protocol's largest message)", cfg.MaxMessageBytes, MinMaxMessageBytes)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("mqttlink: metrics: %w", err)
	}
	l := &Link{
		cfg:      cfg,
		log:      log.With().Str("component", "mqttlink").Str("client_id", cfg.ClientID).Logger(),
		m:        m,
		outbox:   ob,
		handlers: map[string]Handler{},
		upCh:     make(chan struct{}),
		lostCh:   make(chan struct{}, 1),
		kick:     make(chan struct{}, 1),
	}
	tlsCfg := cfg.TLSConfig
	if tlsCfg == nil && (cfg.TLS.CAFile != "" || cfg.TLS.CertFile != "") {
		if tlsCfg, err = LoadTLS(cfg.TLS); err != nil {
			return nil, err
		}
	}
	o := paho.NewClientOptions().
		AddBroker(cfg.BrokerURL).
		SetClientID(cfg.ClientID).
		SetUsername(cfg.Username).
		SetPassword(cfg.Password).
		SetCleanSession(cfg.CleanSession).
		SetKeepAlive(cfg.KeepAlive).
		SetConnectTimeout(cfg.ConnectTimeout).
		SetAutoReconnect(false). // Run reconnects, with jitter
		SetConnectRetry(false).
		SetOrderMatters(false). // handlers may Subscribe without deadlocking the router
		SetWriteTimeout(30 * time.Second).
		SetDefaultPublishHandler(l.dispatch).
		SetCustomOpenConnectionFn(dialLimited(cfg.MaxMessageBytes)).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			l.log.Warn().Err(err).Msg("connection lost")
			select {
			case l.lostCh <- struct{}{}:
			default:
			}
		})
	if tlsCfg != nil {
		o.SetTLSConfig(tlsCfg)
	}
	if w := cfg.Will; w != nil {
		o.SetBinaryWill(w.Topic, w.Payload, 1, w.Retained)
	}
	l.client = paho.NewClient(o)
	return l, nil
}

// LoadTLS builds a tls.Config from PEM files.
func LoadTLS(f TLSFiles) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.ServerName}
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("mqttlink: CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("mqttlink: CA %s: no certificates", f.CAFile)
		}
		c.RootCAs = pool
	}
	if f.CertFile != "" || f.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("mqttlink: client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

func (l *Link) dispatch(_ paho.Client, msg paho.Message) {
	l.m.received.Inc()
	topic := msg.Topic()
	if size, orig, ok := parseOversize(topic); ok {
		l.m.oversize.Inc()
		if l.cfg.OnOversize != nil {
			l.cfg.OnOversize(orig, size)
		} else {
			l.log.Warn().Str("topic", orig).Int64("bytes", size).Int64("limit", l.cfg.MaxMessageBytes).Msg("oversize message discarded unread")
		}
		return
	}
	l.mu.Lock()
	var hs []Handler
	for f, h := range l.handlers {
		if wire.Match(f, topic) {
			hs = append(hs, h)
		}
	}
	if len(hs) == 0 {
		for _, fb := range l.fallback {
			if wire.Match(fb.filter, topic) {
				hs = append(hs, fb.h)
			}
		}
	}
	l.mu.Unlock()
	for _, h := range hs {
		h(topic, msg.Payload())
	}
}

// HandleUnmatched registers h for messages that match filter but no
// subscribed filter; it subscribes to nothing. Such messages come from a
// persistent session's subscriptions made before a restart. Register
// fallbacks before Run.
func (l *Link) HandleUnmatched(filter string, h Handler) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fallback = append(l.fallback, fallback{filter, h})
}

// OnConnect registers f to run (in its own goroutine) after every
// connection, once subscriptions are restored.
func (l *Link) OnConnect(f func()) {
	l.mu.Lock()
	l.onUp = append(l.onUp, f)
	up := l.up
	l.mu.Unlock()
	if up {
		go f()
	}
}

// Connected returns a channel closed while the session is up (a fresh one is
// handed out after each disconnect).
func (l *Link) Connected() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.upCh
}

// WaitConnected blocks until the session is up or ctx ends.
func (l *Link) WaitConnected(ctx context.Context) error {
	select {
	case <-l.Connected():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// IsConnected reports whether the session is up.
func (l *Link) IsConnected() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.up
}

// Subscribe registers h for filter (QoS 1) and, when connected, subscribes
// now and waits for the SUBACK. The subscription is restored on every
// reconnect. When not connected it returns nil: the subscription happens on
// connect.
func (l *Link) Subscribe(ctx context.Context, h Handler, filters ...string) error {
	l.mu.Lock()
	for _, f := range filters {
		l.handlers[f] = h
	}
	up := l.up
	l.mu.Unlock()
	if !up {
		return nil
	}
	return l.subscribeNow(ctx, filters)
}

func (l *Link) subscribeNow(ctx context.Context, filters []string) error {
	if len(filters) == 0 {
		return nil
	}
	m := make(map[string]byte, len(filters))
	for _, f := range filters {
		m[f] = 1
	}
	// nil callback: messages go to the default handler (dispatch), which also
	// catches messages the persistent session delivers before we re-subscribe.
	tok := l.client.SubscribeMultiple(m, nil)
	if err := wait(ctx, tok); err != nil {
		return fmt.Errorf("mqttlink: subscribe: %w", err)
	}
	if st, ok := tok.(*paho.SubscribeToken); ok {
		for f, code := range st.Result() {
			if code == 0x80 {
				return fmt.Errorf("mqttlink: subscribe %s: refused by broker", f)
			}
		}
	}
	return nil
}

// Unsubscribe removes the handlers of filters and unsubscribes when connected.
func (l *Link) Unsubscribe(ctx context.Context, filters ...string) error {
	l.mu.Lock()
	for _, f := range filters {
		delete(l.handlers, f)
	}
	up := l.up
	l.mu.Unlock()
	if !up || len(filters) == 0 {
		return nil
	}
	if err := wait(ctx, l.client.Unsubscribe(filters...)); err != nil {
		return fmt.Errorf("mqttlink: unsubscribe: %w", err)
	}
	return nil
}

// Publish sends a QoS 1 message now and waits for the PUBACK. It fails with
// ErrNotConnected while the link is down; reports that must survive an
// outage go through the Outbox.
func (l *Link) Publish(ctx context.Context, topic string, retained bool, payload []byte) error {
	if len(payload) > wire.MaxMessageBytes {
		return fmt.Errorf("mqttlink: publish %s: %d bytes over the %d-byte message limit", topic, len(payload), wire.MaxMessageBytes)
	}
	if !l.IsConnected() {
		return ErrNotConnected
	}
	if err := wait(ctx, l.client.Publish(topic, 1, retained, payload)); err != nil {
		return fmt.Errorf("mqttlink: publish %s: %w", topic, err)
	}
	return nil
}

// PublishAsync sends a QoS 1 message without waiting; the returned function
// waits for the PUBACK. Used to pipeline bulk publishes (chunks).
func (l *Link) PublishAsync(topic string, retained bool, payload []byte) (waitAck func(context.Context) error) {
	if len(payload) > wire.MaxMessageBytes {
		return func(context.Context) error {
			return fmt.Errorf("mqttlink: publish %s: %d bytes over the message limit", topic, len(payload))
		}
	}
	tok := l.client.Publish(topic, 1, retained, payload)
	return func(ctx context.Context) error { return wait(ctx, tok) }
}

// KickOutbox wakes the outbox flusher: call it when the outbox gained
// messages (the model store writes its reports in its own transactions).
func (l *Link) KickOutbox() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

func wait(ctx context.Context, tok paho.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run connects and keeps the session up until ctx ends, then publishes the
// will payload (if any), disconnects cleanly and returns nil.
func (l *Link) Run(ctx context.Context) error {
	backoff := l.cfg.BackoffMin
	for {
		if ctx.Err() != nil {
			return nil
		}
		err := wait(ctx, l.client.Connect())
		if err != nil {
			if ctx.Err() != nil {
				l.client.Disconnect(0)
				return nil
			}
			l.m.connectErrors.Inc()
			d := backoff/2 + rand.N(backoff/2+1)
			l.log.Warn().Err(err).Dur("retry_in", d).Msg("connect failed")
			backoff = min(backoff*2, l.cfg.BackoffMax)
			select {
			case <-time.After(d):
				continue
			case <-ctx.Done():
				return nil
			}
		}
		backoff = l.cfg.BackoffMin
		l.sessionUp(ctx)
		flushCtx, stopFlush := context.WithCancel(ctx)
		flushed := make(chan struct{})
		go func() { defer close(flushed); l.flushOutbox(flushCtx) }()
		select {
		case <-l.lostCh:
		case <-ctx.Done():
		}
		stopFlush()
		<-flushed
		l.sessionDown()
		if ctx.Err() != nil {
			if w := l.cfg.Will; w != nil && l.client.IsConnectionOpen() {
				tok := l.client.Publish(w.Topic, 1, w.Retained, w.Payload)
				tok.WaitTimeout(2 * time.Second)
			}
			l.client.Disconnect(250)
			return nil
		}
	}
}

func (l *Link) sessionUp(ctx context.Context) {
	l.m.connects.Inc()
	l.m.connected.Set(1)
	// Drain a stale lost signal from a previous session.
	select {
	case <-l.lostCh:
	default:
	}
	l.mu.Lock()
	filters := make([]string, 0, len(l.handlers))
	for f := range l.handlers {
		filters = append(filters, f)
	}
	l.up = true
	onUp := append([]func(){}, l.onUp...)
	l.mu.Unlock()
	if err := l.subscribeNow(ctx, filters); err != nil {
		l.log.Warn().Err(err).Msg("restoring subscriptions")
	}
	l.mu.Lock()
	close(l.upCh)
	l.mu.Unlock()
	l.log.Info().Int("subscriptions", len(filters)).Msg("connected")
	for _, f := range onUp {
		go f()
	}
}

func (l *Link) sessionDown() {
	l.m.connected.Set(0)
	l.mu.Lock()
	l.up = false
	l.upCh = make(chan struct{})
	l.mu.Unlock()
}

// outboxAckTimeout bounds the removal of a message the broker acknowledged.
const outboxAckTimeout = 10 * time.Second

// flushOutbox publishes queued reports strictly in order: one at a time,
// each removed only after its PUBACK. On an error it waits for the next
// session (the message stays queued).
func (l *Link) flushOutbox(ctx context.Context) {
	if l.outbox == nil {
		return
	}
	for {
		msgs, err := l.outbox.Oldest(ctx, l.cfg.OutboxBatch)
		if err != nil {
			if ctx.Err() == nil { // else the session ended
				l.log.Error().Err(err).Msg("reading outbox")
			}
			return
		}
		for _, m := range msgs {
			if err := wait(ctx, l.client.Publish(m.Topic, 1, m.Retained, m.Payload)); err != nil {
				if ctx.Err() == nil {
					l.log.Warn().Err(err).Msg("outbox publish failed; retrying after reconnect")
				}
				return
			}
			// The broker has it: record that even when the session is
			// ending (else it is sent again; the cloud deduplicates by seq).
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), outboxAckTimeout)
			err := l.outbox.Remove(rctx, m.Seq)
			cancel()
			if err != nil {
				l.log.Error().Err(err).Msg("removing from outbox")
				return
			}
			l.m.outboxSent.Inc()
		}
		if n, err := l.outbox.Len(ctx); err == nil {
			l.m.outboxDepth.Set(float64(n))
		}
		if len(msgs) > 0 {
			continue
		}
		select {
		case <-l.kick:
		case <-ctx.Done():
			return
		}
	}
}

// Close releases the client. Run must have returned. It is idempotent.
func (l *Link) Close() error {
	if l.client.IsConnectionOpen() {
		l.client.Disconnect(0)
	}
	return nil
}
