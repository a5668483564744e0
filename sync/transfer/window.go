package transfer

import (
	"fmt"
	"time"
)

// FetchWindow is a daily window of local time in which transfers may ask
// the broker for chunks, such as "01:00-05:00" (cloud.fetch_window); it may
// cross midnight ("22:00-06:00"). The zero value is always open.
type FetchWindow struct {
	set        bool
	start, end int // minutes after midnight; start != end
}

// ParseFetchWindow parses "HH:MM-HH:MM" (24-hour clock, two digits each,
// start and end differ); "" is the always-open window. Anything else is an
// error naming what is wrong.
func ParseFetchWindow(s string) (FetchWindow, error) {
	if s == "" {
		return FetchWindow{}, nil
	}
	if len(s) != len("HH:MM-HH:MM") || s[5] != '-' {
		return FetchWindow{}, fmt.Errorf("fetch window %.40q: want HH:MM-HH:MM, such as 01:00-05:00", s)
	}
	start, err := parseClock(s[:5])
	if err != nil {
		return FetchWindow{}, fmt.Errorf("fetch window %q: start: %w", s, err)
	}
	end, err := parseClock(s[6:])
	if err != nil {
		return FetchWindow{}, fmt.Errorf("fetch window %q: end: %w", s, err)
	}
	if start == end {
		return FetchWindow{}, fmt.Errorf("fetch window %q: start and end are the same (leave it empty for always)", s)
	}
	return FetchWindow{set: true, start: start, end: end}, nil
}

// parseClock parses "HH:MM" into minutes after midnight.
func parseClock(s string) (int, error) {
	if len(s) != 5 || s[2] != ':' {
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	for _, i := range []int{0, 1, 3, 4} {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%q is not HH:MM", s)
		}
	}
	h := int(s[0]-'0')*10 + int(s[1]-'0')
	m := int(s[3]-'0')*10 + int(s[4]-'0')
	if h > 23 || m > 59 {
		return 0, fmt.Errorf("%q is not a time of day (00:00 to 23:59)", s)
	}
	return h*60 + m, nil
}

// String gives back what ParseFetchWindow accepts ("" for always).
func (w FetchWindow) String() string {
	if !w.set {
		return ""
	}
	return fmt.Sprintf("%02d:%02d-%02d:%02d", w.start/60, w.start%60, w.end/60, w.end%60)
}

// Open reports whether t, in its own location, is inside the window, and
// when that next changes (the next end while open, the next start while
// closed). The always-open window reports true and the zero time.
func (w FetchWindow) Open(t time.Time) (open bool, next time.Time) {
	if !w.set {
		return true, time.Time{}
	}
	m := t.Hour()*60 + t.Minute()
	if w.start < w.end {
		open = m >= w.start && m < w.end
	} else {
		open = m >= w.start || m < w.end
	}
	if open {
		return true, nextClock(t, w.end)
	}
	return false, nextClock(t, w.start)
}

// nextClock is the first time after t at minute-of-day m, in t's location.
func nextClock(t time.Time, m int) time.Time {
	d := time.Date(t.Year(), t.Month(), t.Day(), m/60, m%60, 0, 0, t.Location())
	if !d.After(t) {
		d = time.Date(t.Year(), t.Month(), t.Day()+1, m/60, m%60, 0, 0, t.Location())
	}
	return d
}
