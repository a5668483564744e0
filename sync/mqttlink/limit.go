package mqttlink

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgeai/edge-node/sync/wire"
)

// The bound on one incoming MQTT packet. paho reads a whole packet into
// memory before handing it over, so the bound is enforced below paho: the
// connection paho dials is wrapped in a limitReader, which parses each
// packet's fixed header (type and Remaining Length) from the broker's byte
// stream. A PUBLISH whose Remaining Length (topic, packet id and payload) is
// over the limit has its topic and packet id read and its payload discarded
// as it streams; paho is handed a PUBLISH with an empty payload whose topic
// is oversizeMarker + the size + "/" + the original topic. MQTT forbids
// U+0000 in topic names, so no broker sends such a topic. paho acknowledges
// it like any QoS 1 message (a retained oversize message is delivered, acked
// and skipped once per subscription, never redelivered in a loop), and
// dispatch reports it to Config.OnOversize instead of the handlers. Any other
// packet type over the limit is a broken broker: the connection is dropped.
//
// MQTT 5's Maximum Packet Size would let the broker drop such messages
// itself, but paho.mqtt.golang speaks MQTT 3.1.1 only.
const (
	// DefaultMaxMessageBytes is the default bound on one incoming PUBLISH.
	DefaultMaxMessageBytes = 4 << 20
	// MinMaxMessageBytes is the smallest bound allowed: the largest
	// message the protocol sends (wire.MaxMessageBytes of payload) with
	// the longest topic MQTT allows and a packet id.
	MinMaxMessageBytes = wire.MaxMessageBytes + 2 + 65535 + 2

	oversizeMarker = "\x00oversize/"
)

// MQTT control packet types (MQTT 3.1.1 §2.2.1).
const packetPublish = 3

// errPacketTooLarge drops a connection whose broker sent a non-PUBLISH packet
// over the limit.
var errPacketTooLarge = errors.New("mqttlink: packet over the message limit")

// limitReader passes MQTT packets through unchanged except a PUBLISH whose
// Remaining Length is over max, which it replaces by an empty-payload marker
// packet after discarding the payload unread. It holds at most one packet's
// fixed and variable header at a time (≤ 5 + 2 + 65535 + 2 bytes).
type limitReader struct {
	r       *bufio.Reader
	max     int64
	pending []byte // header bytes (or a marker packet) not yet handed out
	left    int64  // bytes of the current packet's body still to pass through
}

func newLimitReader(r io.Reader, max int64) *limitReader {
	return &limitReader{r: bufio.NewReader(r), max: max}
}

// Read implements io.Reader.
func (l *limitReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(l.pending) == 0 && l.left == 0 {
		if err := l.next(); err != nil {
			return 0, err
		}
	}
	if len(l.pending) > 0 {
		n := copy(p, l.pending)
		l.pending = l.pending[n:]
		return n, nil
	}
	n, err := l.r.Read(p[:min(int64(len(p)), l.left)])
	l.left -= int64(n)
	if err == io.EOF && l.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// next reads the next packet's fixed header and sets pending and left.
func (l *limitReader) next() error {
	b0, err := l.r.ReadByte()
	if err != nil {
		return err
	}
	hdr := []byte{b0}
	var rem int64
	for i := 0; ; i++ {
		if i == 4 {
			return errors.New("mqttlink: malformed remaining length")
		}
		b, err := l.r.ReadByte()
		if err != nil {
			return unexpected(err)
		}
		hdr = append(hdr, b)
		rem |= int64(b&0x7f) << (7 * i)
		if b&0x80 == 0 {
			break
		}
	}
	if rem <= l.max {
		l.pending, l.left = hdr, rem
		return nil
	}
	if b0>>4 != packetPublish {
		return fmt.Errorf("%w: packet type %d, %d bytes, limit %d", errPacketTooLarge, b0>>4, rem, l.max)
	}
	var tl [2]byte
	if _, err := io.ReadFull(l.r, tl[:]); err != nil {
		return unexpected(err)
	}
	n := int(tl[0])<<8 | int(tl[1])
	if int64(2+n) > rem {
		return errors.New("mqttlink: PUBLISH shorter than its topic")
	}
	topic := make([]byte, n)
	if _, err := io.ReadFull(l.r, topic); err != nil {
		return unexpected(err)
	}
	var id []byte
	if qos := (b0 >> 1) & 3; qos > 0 {
		id = make([]byte, 2)
		if _, err := io.ReadFull(l.r, id); err != nil {
			return unexpected(err)
		}
	}
	body := rem - 2 - int64(len(topic)) - int64(len(id))
	if body < 0 {
		return errors.New("mqttlink: PUBLISH shorter than its topic")
	}
	if _, err := io.CopyN(io.Discard, l.r, body); err != nil {
		return unexpected(err)
	}
	marked := oversizeMarker + strconv.FormatInt(body, 10) + "/" + string(topic)
	if len(marked) > 65535 {
		marked = marked[:65535] // the size and most of the topic survive
	}
	vh := append([]byte{byte(len(marked) >> 8), byte(len(marked))}, marked...)
	vh = append(vh, id...)
	l.pending = append(appendRemainingLength([]byte{b0}, len(vh)), vh...)
	return nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// appendRemainingLength appends n as an MQTT variable-length integer.
func appendRemainingLength(b []byte, n int) []byte {
	for {
		d := byte(n & 0x7f)
		n >>= 7
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

// parseOversize returns the size and original topic of a marker topic.
func parseOversize(topic string) (size int64, orig string, ok bool) {
	rest, ok := strings.CutPrefix(topic, oversizeMarker)
	if !ok {
		return 0, "", false
	}
	n, orig, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, "", false
	}
	size, err := strconv.ParseInt(n, 10, 64)
	return size, orig, err == nil
}

// limitConn is a net.Conn whose reads go through a limitReader.
type limitConn struct {
	net.Conn
	r *limitReader
}

func (c *limitConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// dialLimited opens the connection to the broker (as paho would: tcp, mqtt,
// ssl, tls, mqtts, tcps, unix) and wraps it in a limitConn.
func dialLimited(max int64) paho.OpenConnectionFunc {
	return func(u *url.URL, o paho.ClientOptions) (net.Conn, error) {
		d := o.Dialer
		if d == nil {
			d = &net.Dialer{Timeout: 30 * time.Second}
		}
		var conn net.Conn
		var err error
		switch u.Scheme {
		case "tcp", "mqtt":
			conn, err = d.Dial("tcp", u.Host)
		case "ssl", "tls", "mqtts", "mqtt+ssl", "tcps":
			conn, err = tls.DialWithDialer(d, "tcp", u.Host, o.TLSConfig)
		case "unix":
			conn, err = d.Dial("unix", u.Path)
		default:
			return nil, fmt.Errorf("mqttlink: broker scheme %q not supported", u.Scheme)
		}
		if err != nil {
			return nil, err
		}
		return &limitConn{Conn: conn, r: newLimitReader(conn, max)}, nil
	}
}
