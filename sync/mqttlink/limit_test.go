package mqttlink

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// publishPacket encodes a PUBLISH with paho's own encoder.
func publishPacket(t testing.TB, topic string, qos byte, id uint16, payload []byte) []byte {
	t.Helper()
	p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	p.TopicName, p.Qos, p.MessageID, p.Payload, p.Retain = topic, qos, id, payload, true
	var b bytes.Buffer
	if err := p.Write(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func pingresp(t testing.TB) []byte {
	var b bytes.Buffer
	if err := packets.NewControlPacket(packets.Pingresp).Write(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// readAll reads the packets a limitReader over in hands out, with paho's
// decoder (what paho itself does with them).
func readAll(in []byte, max int64) ([]packets.ControlPacket, error) {
	r := newLimitReader(bytes.NewReader(in), max)
	var out []packets.ControlPacket
	for {
		p, err := packets.ReadPacket(r)
		if err != nil {
			return out, err
		}
		out = append(out, p)
	}
}

func TestLimitReaderPassesAndMarks(t *testing.T) {
	const max = 100
	small := publishPacket(t, "edgeai/v1/x", 1, 7, bytes.Repeat([]byte{'a'}, 50))
	big1 := publishPacket(t, "edgeai/v1/nodes/n1/desired", 1, 9, bytes.Repeat([]byte{'b'}, 5000))
	big0 := publishPacket(t, "edgeai/v1/y", 0, 0, bytes.Repeat([]byte{'c'}, 200))
	in := bytes.Join([][]byte{small, big1, pingresp(t), big0, small}, nil)
	got, err := readAll(in, max)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("err = %v, want io.EOF after the last packet", err)
	}
	if len(got) != 5 {
		t.Fatalf("%d packets, want 5", len(got))
	}
	for _, i := range []int{0, 4} {
		p := got[i].(*packets.PublishPacket)
		if p.TopicName != "edgeai/v1/x" || p.MessageID != 7 || len(p.Payload) != 50 {
			t.Fatalf("packet %d changed: %v", i, p)
		}
	}
	for i, want := range map[int]struct {
		topic string
		size  int64
		id    uint16
		qos   byte
	}{1: {"edgeai/v1/nodes/n1/desired", 5000, 9, 1}, 3: {"edgeai/v1/y", 200, 0, 0}} {
		p := got[i].(*packets.PublishPacket)
		size, topic, ok := parseOversize(p.TopicName)
		if !ok || topic != want.topic || size != want.size || p.MessageID != want.id || p.Qos != want.qos || !p.Retain || len(p.Payload) != 0 {
			t.Fatalf("packet %d: %q size %d id %d qos %d payload %d, want marker of %+v", i, p.TopicName, size, p.MessageID, p.Qos, len(p.Payload), want)
		}
	}
	if _, ok := got[2].(*packets.PingrespPacket); !ok {
		t.Fatalf("packet 2 is %T, want PINGRESP", got[2])
	}
}

func TestLimitReaderBadInput(t *testing.T) {
	const max = 100
	big := publishPacket(t, "t/x", 1, 1, bytes.Repeat([]byte{'b'}, 500))
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"remaining length of 5 bytes", []byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x7f}, "malformed remaining length"},
		{"truncated remaining length", []byte{0x30, 0xff}, io.ErrUnexpectedEOF.Error()},
		{"oversize SUBACK", []byte{0x90, 0xff, 0x01}, errPacketTooLarge.Error()},
		{"oversize PUBLISH shorter than its topic", []byte{0x30, 0xc8, 0x01, 0xff, 0xff}, "shorter than its topic"},
		{"oversize PUBLISH truncated in its topic", []byte{0x30, 0xc8, 0x01, 0x00, 0x09, 't'}, io.ErrUnexpectedEOF.Error()},
		{"oversize PUBLISH truncated in its payload", big[:len(big)-1], io.ErrUnexpectedEOF.Error()},
		{"small PUBLISH truncated", []byte{0x30, 0x10, 0x00, 0x01, 't'}, io.ErrUnexpectedEOF.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readAll(tc.in, max)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// FuzzLimitReader: whatever the broker sends, the reader does not panic and
// paho never sees a PUBLISH payload over the limit.
func FuzzLimitReader(f *testing.F) {
	f.Add(publishPacket(f, "a/b", 1, 3, bytes.Repeat([]byte{'x'}, 300)))
	f.Add(publishPacket(f, "a/b", 0, 0, []byte("small")))
	f.Add(append(pingresp(f), 0x30, 0xff, 0xff, 0xff, 0x7f))
	f.Fuzz(func(t *testing.T, in []byte) {
		const max = 64
		got, _ := readAll(in, max)
		for _, p := range got {
			if pp, ok := p.(*packets.PublishPacket); ok && len(pp.Payload) > max {
				t.Fatalf("a %d-byte payload passed a %d-byte limit", len(pp.Payload), max)
			}
		}
	})
}
