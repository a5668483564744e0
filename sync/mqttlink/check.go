package mqttlink

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"time"
)

// brokerSchemes are the URL schemes the MQTT client speaks, with their
// default ports.
var brokerSchemes = map[string]string{"tcp": "1883", "mqtt": "1883", "ssl": "8883", "tls": "8883", "mqtts": "8883"}

// CheckBroker fails fast, with a message saying what is wrong, on a
// malformed broker URL or a broker that does not accept TCP connections
// within timeout; it returns the host:port dialled.
func CheckBroker(ctx context.Context, raw string, timeout time.Duration) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "", fmt.Errorf("broker %q is not a URL: want tcp://host:port or ssl://host:port", raw)
	}
	port, ok := brokerSchemes[u.Scheme]
	if !ok {
		return "", fmt.Errorf("broker %q: scheme %s is not MQTT: want tcp://host:port or ssl://host:port", raw, u.Scheme)
	}
	if u.Port() != "" {
		port = u.Port()
	}
	addr := net.JoinHostPort(u.Hostname(), port)
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("broker %s unreachable: %w", raw, err)
	}
	conn.Close()
	return addr, nil
}
