package kserve

import "unsafe"

// bytesToString views b as a string without copying, for handing JSON
// literals to strconv's parsers. The result must not outlive b's next
// modification: the decoder reuses its buffer, so callers use the string
// only within the call that parses it and never keep it (nor an error that
// quotes it) afterwards. This is the package's only use of unsafe.
func bytesToString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
