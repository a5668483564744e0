package transfer

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/sync/wire"
)

func TestParseFetchWindowRejectsBadInput(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{" ", "HH:MM-HH:MM"},
		{"01:00", "HH:MM-HH:MM"},
		{"01:00-05:00 ", "HH:MM-HH:MM"},
		{" 01:00-05:00", "HH:MM-HH:MM"},
		{"1:00-5:00", "HH:MM-HH:MM"},
		{"01:00–05:00", "HH:MM-HH:MM"}, // an en dash
		{"01:00_05:00", "HH:MM-HH:MM"},
		{"01:00-05:00-07:00", "HH:MM-HH:MM"},
		{"24:00-05:00", "start"},
		{"01:00-05:60", "end"},
		{"01:00-99:99", "end"},
		{"01.00-05:00", "start"},
		{"0a:00-05:00", "start"},
		{"01:00-+5:00", "end"},
		{"-1:00-05:00", "start"},
		{"01:00-05:0\x00", "end"},
		{"05:00-05:00", "the same"},
		{"00:00-00:00", "the same"},
		{strings.Repeat("0", 1<<20), "HH:MM-HH:MM"},
	} {
		t.Run(tc.in[:min(len(tc.in), 20)], func(t *testing.T) {
			w, err := ParseFetchWindow(tc.in)
			if err == nil {
				t.Fatalf("accepted as %q", w)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			if len(err.Error()) > 200 {
				t.Errorf("error of %d bytes: it must not echo a long input", len(err.Error()))
			}
		})
	}
}

func TestFetchWindowOpen(t *testing.T) {
	day := func(h, m int) time.Time { return time.Date(2026, 3, 10, h, m, 30, 0, time.UTC) }
	for _, tc := range []struct {
		window string
		at     time.Time
		open   bool
		next   time.Time
	}{
		{"01:00-05:00", day(0, 59), false, day(1, 0).Add(-30 * time.Second)},
		{"01:00-05:00", day(1, 0), true, day(5, 0).Add(-30 * time.Second)},
		{"01:00-05:00", day(4, 59), true, day(5, 0).Add(-30 * time.Second)},
		{"01:00-05:00", day(5, 0), false, day(1, 0).Add(24*time.Hour - 30*time.Second)},
		{"22:00-06:00", day(23, 0), true, day(6, 0).Add(24*time.Hour - 30*time.Second)},
		{"22:00-06:00", day(2, 0), true, day(6, 0).Add(-30 * time.Second)},
		{"22:00-06:00", day(12, 0), false, day(22, 0).Add(-30 * time.Second)},
		{"23:59-00:00", day(23, 59), true, day(0, 0).Add(24*time.Hour - 30*time.Second)},
	} {
		w, err := ParseFetchWindow(tc.window)
		if err != nil {
			t.Fatal(err)
		}
		if w.String() != tc.window {
			t.Errorf("String() = %q, want %q", w, tc.window)
		}
		open, next := w.Open(tc.at)
		if open != tc.open || !next.Equal(tc.next) {
			t.Errorf("%s at %s: open %v until %s, want %v until %s", tc.window, tc.at.Format("15:04:05"), open, next, tc.open, tc.next)
		}
	}
	var always FetchWindow
	if open, next := always.Open(day(3, 0)); !open || !next.IsZero() {
		t.Errorf("the zero window: open %v until %v", open, next)
	}
}

func FuzzParseFetchWindow(f *testing.F) {
	for _, s := range []string{"", "01:00-05:00", "22:00-06:00", "24:00-01:00", "01:00-01:00", "1:00-5:00"} {
		f.Add(s)
	}
	at := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		w, err := ParseFetchWindow(s)
		if err != nil {
			return
		}
		if got := w.String(); got != s {
			t.Fatalf("%q parsed, prints as %q", s, got)
		}
		open, next := w.Open(at)
		if s != "" {
			if !next.After(at) || next.Sub(at) > 24*time.Hour {
				t.Fatalf("%q at %v: next change %v", s, at, next)
			}
			if o2, _ := w.Open(next); o2 == open {
				t.Fatalf("%q: still open=%v at its next change %v", s, open, next)
			}
		}
	})
}

// TestFetchWindowPausesAndResumes: with a fetch window, a transfer asks
// for no chunk outside it: one that starts before the window waits for it,
// one still running at its end pauses (no new chunk is subscribed) and
// resumes at the next window, asking for no chunk twice. A download rate
// of 100 B/s makes the 6 MiB transfer span several nightly windows; the
// clock is simulated, so the days pass at once.
func TestFetchWindowPausesAndResumes(t *testing.T) {
	const nChunks, chunkSize = 24, 256 << 10
	clock := &simClock{now: time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)}
	link := &serveLink{clock: clock, chunks: map[string][]byte{}}
	m := syntheticManifest(link, nChunks, chunkSize)
	window, err := ParseFetchWindow("01:00-05:00")
	if err != nil {
		t.Fatal(err)
	}
	ss := NewStoreSink(openStore(t, t.TempDir()))
	t.Cleanup(func() { ss.Close() })
	rej, _ := wire.NewRejecter(nil, zerolog.Nop())
	f, err := NewFetcher(Config{Topics: topics, StallTimeout: time.Minute, DownloadRate: 100, FetchWindow: window,
		Now: clock.Now, After: clock.After}, link, ss, rej, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	var mu sync.Mutex // guards pauses, last
	pauses, last := 0, false
	res, err := f.Fetch(ctx, m, func(p Progress) {
		mu.Lock()
		defer mu.Unlock()
		if p.OutsideWindow && !last {
			pauses++
		}
		last = p.OutsideWindow
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.ChunksNetwork != nChunks {
		t.Fatalf("%d chunks from the network, want %d", res.ChunksNetwork, nChunks)
	}
	link.mu.Lock()
	defer link.mu.Unlock()
	if len(link.log) != nChunks {
		t.Errorf("%d subscriptions for %d chunks: a chunk was asked for twice", len(link.log), nChunks)
	}
	days := map[int]bool{}
	for i, s := range link.log {
		if open, _ := window.Open(s.at); !open {
			t.Errorf("chunk %d subscribed at %v, outside the window %s", i, s.at, window)
		}
		days[s.at.YearDay()] = true
	}
	mu.Lock()
	defer mu.Unlock()
	// Waiting for the first window, then a pause at the end of every
	// window but the last.
	if pauses != len(days) {
		t.Errorf("progress showed %d waits for the window over %d windows, want %d", pauses, len(days), len(days))
	}
	if len(days) < 3 {
		t.Errorf("the transfer took %d windows; the test wants it to span at least 3", len(days))
	}
	t.Logf("%d chunks over %d nightly windows, done at %v (simulated)", nChunks, len(days), clock.Now())
}
