//go:build !unix

package fleetsim

import "errors"

// raiseFDLimit: Windows has no open-files limit to raise (sockets are
// handles, bounded by memory), so there is no limit to check against.
func raiseFDLimit() (uint64, error) {
	return 0, errors.ErrUnsupported
}
