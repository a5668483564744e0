package node

import (
	"context"
	"fmt"
	"net"

	"github.com/edgeai/edge-node/internal/buildinfo"
	"github.com/edgeai/edge-node/node/kserve/tritongrpc"
)

// The gRPC frontend (Triton's GRPCInferenceService) beside the HTTP one:
// the same Node as its backend (Acquire, Index, Stats, LoadModel and
// UnloadModel through the serving owner), its own listener.

// openGRPC builds the gRPC server and opens its listener in New, so that a
// port in use is a start-up error; grpc_addr "" leaves it off.
func (n *Node) openGRPC() error {
	if n.cfg.GRPCAddr == "" {
		return nil
	}
	opts := tritongrpc.Options{
		ServerVersion: buildinfo.Version(), MaxMessageBytes: int(min(n.cfg.MaxRequestBytes, 1<<31-1)),
		RepositoryControl: n.cfg.RepositoryControl, RepositoryToken: n.cfg.AdminToken, Registerer: n.reg,
		SharedMemory: n.sharedMemory(), NewAllocator: n.newAllocator,
	}
	if n.tracing != nil {
		opts.TracerProvider = n.tracing.tp // the REST frontend's provider: one exporter
	}
	srv, err := tritongrpc.NewServer(n, n.baseLog, opts)
	if err != nil {
		return err
	}
	if n.grpcLn, err = net.Listen("tcp", n.cfg.GRPCAddr); err != nil {
		return fmt.Errorf("grpc_addr: %w", err)
	}
	n.grpcSrv = srv
	n.log.Info().Str("addr", n.grpcLn.Addr().String()).Msg("gRPC inference service listening")
	return nil
}

// GRPCAddr is the gRPC listener's address ("" when gRPC is off).
func (n *Node) GRPCAddr() string {
	if n.grpcLn == nil {
		return ""
	}
	return n.grpcLn.Addr().String()
}

// serveGRPC serves in the background; the channel gets Serve's error if it
// stops on its own. It is nil when gRPC is off.
func (n *Node) serveGRPC() <-chan error {
	if n.grpcSrv == nil {
		return nil
	}
	errc := make(chan error, 1)
	go func() {
		if err := n.grpcSrv.Serve(n.grpcLn); err != nil {
			errc <- err
		}
	}()
	return errc
}

// drainGRPC stops the gRPC server gracefully (in-flight calls and streams
// finish), forcing it when ctx ends first; the channel closes when it has
// stopped.
func (n *Node) drainGRPC(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	if n.grpcSrv == nil {
		close(done)
		return done
	}
	stopped := make(chan struct{})
	go func() {
		n.grpcSrv.GracefulStop()
		close(stopped)
	}()
	go func() {
		defer close(done)
		select {
		case <-stopped:
		case <-ctx.Done():
			n.log.Warn().Msg("drain deadline passed; closing remaining gRPC streams")
			n.grpcSrv.Stop()
			<-stopped
		}
	}()
	return done
}

// closeGRPC stops the server and closes its listener (Stop closes only
// the listeners Serve was given: not this one when Run never ran).
func (n *Node) closeGRPC() {
	if n.grpcSrv != nil {
		n.grpcSrv.Stop()
	}
	if n.grpcLn != nil {
		_ = n.grpcLn.Close() // already closed by Stop after Serve
	}
}
