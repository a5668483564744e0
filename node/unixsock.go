package node

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strconv"
)

// Unix-domain sockets: the REST and gRPC APIs also on socket files, for
// application processes on the device (no TCP port, access by file mode).

// socketMode parses socket_mode ("0660").
func (c Config) socketMode() (fs.FileMode, error) {
	if c.SocketMode == "" {
		return 0o660, nil
	}
	m, err := strconv.ParseUint(c.SocketMode, 8, 32)
	if err != nil || m > 0o777 {
		return 0, fmt.Errorf("socket_mode %q: want an octal file mode such as 0660", c.SocketMode)
	}
	return fs.FileMode(m), nil
}

// listenUnix listens on path with mode. A socket file left by an earlier
// run (nothing listening on it) is replaced; any other file at path is an
// error, never removed.
func listenUnix(key, path string, mode fs.FileMode) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s %s: exists and is not a socket", key, path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s %s: another process is serving on it", key, path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("%s %s: removing the stale socket: %w", key, path, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s %s: %w", key, path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	// The socket is created with the umask's mode; chmod before anyone is
	// served (connections queue until Serve).
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("%s %s: %w", key, path, err)
	}
	return ln, nil
}

// openSockets opens the configured socket listeners in New (a path in use
// is a start-up error). The gRPC socket needs the gRPC service.
func (n *Node) openSockets() error {
	mode, err := n.cfg.socketMode()
	if err != nil {
		return err
	}
	if p := n.cfg.HTTPSocket; p != "" {
		if n.httpSock, err = listenUnix("http_socket", p, mode); err != nil {
			return err
		}
	}
	if p := n.cfg.GRPCSocket; p != "" {
		if n.grpcSrv == nil {
			return errors.New("grpc_socket needs the gRPC service (grpc_addr is empty)")
		}
		if n.grpcSock, err = listenUnix("grpc_socket", p, mode); err != nil {
			return err
		}
	}
	return nil
}

// serveSockets serves the socket listeners with the same servers as the
// TCP ones, so shutdown drains them alike. Their Serve errors after a
// shutdown are the servers' closed errors and are not reported.
func (n *Node) serveSockets() {
	if n.httpSock != nil {
		go func() {
			if err := n.srv.Serve(n.httpSock); err != nil && !errors.Is(err, http.ErrServerClosed) {
				n.log.Error().Err(err).Str("socket", n.cfg.HTTPSocket).Msg("serving the HTTP socket stopped")
			}
		}()
	}
	if n.grpcSock != nil {
		go func() {
			if err := n.grpcSrv.Serve(n.grpcSock); err != nil {
				n.log.Error().Err(err).Str("socket", n.cfg.GRPCSocket).Msg("serving the gRPC socket stopped")
			}
		}()
	}
}

// closeSockets closes the listeners (which removes their files) when Run
// never served them; after Run the servers closed them already.
func (n *Node) closeSockets() {
	for _, ln := range []net.Listener{n.httpSock, n.grpcSock} {
		if ln != nil {
			_ = ln.Close()
		}
	}
}
