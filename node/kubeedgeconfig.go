package node

import (
	"fmt"

	"github.com/edgeai/edge-node/sync/kubeedge/dmi"
	"github.com/edgeai/edge-node/sync/kubeedge/eventbus"
)

// KubeEdgeConfig configures the KubeEdge bridges (package sync/kubeedge):
// the node as a DMI mapper of EdgeCore, and/or as a device on EdgeCore's
// EventBus MQTT broker. Both are off by default. Either drives the node's
// reconciler as its own desired-state source (kubeedge-dmi,
// kubeedge-eventbus) next to the cloud link's MQTT topics.
type KubeEdgeConfig struct {
	// DMI registers the node with EdgeCore as a DMI mapper (gRPC over
	// Unix-domain sockets).
	DMI KubeEdgeDMIConfig `yaml:"dmi"`
	// EventBus makes the node a device on EdgeCore's EventBus MQTT broker
	// (the device twin topics).
	EventBus KubeEdgeEventBusConfig `yaml:"eventbus"`
}

// KubeEdgeDMIConfig is dmi.Config plus an on/off switch.
type KubeEdgeDMIConfig struct {
	// Enabled turns the DMI mapper on.
	Enabled    bool `yaml:"enabled"`
	dmi.Config `yaml:",inline"`
}

// KubeEdgeEventBusConfig is eventbus.Config plus an on/off switch.
type KubeEdgeEventBusConfig struct {
	// Enabled turns the EventBus device on.
	Enabled         bool `yaml:"enabled"`
	eventbus.Config `yaml:",inline"`
}

func defaultKubeEdgeConfig() KubeEdgeConfig {
	return KubeEdgeConfig{
		DMI:      KubeEdgeDMIConfig{Config: dmi.DefaultConfig()},
		EventBus: KubeEdgeEventBusConfig{Config: eventbus.DefaultConfig()},
	}
}

// validate checks the enabled bridges only: a disabled one may be left
// half-filled (the defaults have no device name).
func (c KubeEdgeConfig) validate() error {
	if c.DMI.Enabled {
		if err := c.DMI.Validate(); err != nil {
			return fmt.Errorf("kubeedge.dmi: %w", err)
		}
	}
	if c.EventBus.Enabled {
		if err := c.EventBus.Validate(); err != nil {
			return fmt.Errorf("kubeedge.eventbus: %w", err)
		}
	}
	return nil
}
