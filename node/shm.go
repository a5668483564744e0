package node

import (
	"github.com/edgeai/edge-node/cgo/pinned"
	"github.com/edgeai/edge-node/node/kserve/sysshm"
)

// sharedMemory is the registry of system shared-memory regions both
// frontends use, built once (nil when the extension is off). Regions are
// pinned through the pinned pool: cudaHostRegister in cuda_host mode,
// mlock in mlock mode, nothing in plain mode.
func (n *Node) sharedMemory() *sysshm.Registry {
	if n.cfg.SharedMemory.Disabled {
		return nil
	}
	if n.shm == nil {
		n.shm = sysshm.New(sysshm.Options{BudgetBytes: n.cfg.SharedMemory.BudgetBytes, Pinner: poolPinner{n.pool}}, n.baseLog)
	}
	return n.shm
}

// poolPinner pins regions with the pinned pool's Register.
type poolPinner struct{ pool *pinned.Pool }

func (p poolPinner) Pin(b []byte) (func() error, error) {
	r, err := p.pool.Register(b)
	if err != nil {
		return nil, err
	}
	return r.Unregister, nil
}
