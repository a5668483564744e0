package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/node"
)

// notifySystemd tells systemd (Type=notify, $NOTIFY_SOCKET) how the node
// is doing: READY=1 once n serves (models loaded, listeners answering),
// WATCHDOG=1 every half of $WATCHDOG_USEC while the process runs, and
// STOPPING=1 when ctx is done (shutdown and the drain begin). Without
// $NOTIFY_SOCKET every send is a no-op. It returns when ctx is done.
func notifySystemd(ctx context.Context, n *node.Node, log zerolog.Logger) {
	notify := func(state string) {
		if _, err := sd.SdNotify(false, state); err != nil {
			log.Warn().Err(err).Str("state", state).Msg("systemd notify")
		}
	}
	var tick <-chan time.Time
	if interval, err := sd.SdWatchdogEnabled(false); err != nil {
		log.Warn().Err(err).Msg("systemd watchdog: WATCHDOG_USEC")
	} else if interval > 0 {
		t := time.NewTicker(interval / 2)
		defer t.Stop()
		tick = t.C
		log.Info().Str("interval", (interval / 2).String()).Msg("systemd watchdog: pinging")
	}
	serving := n.Serving()
	for {
		select {
		case <-serving:
			serving = nil
			notify(sd.SdNotifyReady)
		case <-tick:
			notify(sd.SdNotifyWatchdog)
		case <-ctx.Done():
			notify(sd.SdNotifyStopping)
			return
		}
	}
}

// credentialFiles maps the files systemd's LoadCredential= puts in
// $CREDENTIALS_DIRECTORY to the secrets they hold. The unit names them
// (deploy/systemd/edge-node.service); docs/operations.md lists them.
var credentialFiles = []struct {
	name string
	set  func(*node.Config, string)
}{
	{"broker_password", func(c *node.Config, v string) { c.Cloud.Password = v }},
	{"admin_token", func(c *node.Config, v string) { c.AdminToken = v }},
	{"kubeedge_eventbus_password", func(c *node.Config, v string) { c.KubeEdge.EventBus.Password = v }},
}

// applyCredentials reads the secrets present in $CREDENTIALS_DIRECTORY
// (unset: nothing to read) onto cfg. A credential's trailing newline is
// dropped (echo adds one); a missing file leaves the value as it was.
func applyCredentials(cfg *node.Config) error {
	dir := os.Getenv("CREDENTIALS_DIRECTORY")
	if dir == "" {
		return nil
	}
	for _, c := range credentialFiles {
		b, err := os.ReadFile(filepath.Join(dir, c.name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("credential %s: %w", c.name, err)
		}
		c.set(cfg, strings.TrimRight(string(b), "\r\n"))
	}
	return nil
}
