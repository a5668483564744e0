package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/fleet"
	"github.com/edgeai/edge-node/sync/mqttlink"
	"github.com/edgeai/edge-node/sync/wire"
)

func newKeys(g *globalFlags) *cobra.Command {
	c := &cobra.Command{Use: "keys", Short: "The fleet's signed key list: signing keys added, rotated and revoked under a root key"}
	c.AddCommand(newKeysPublish(g), newKeysShow(g))
	return c
}

func newKeysPublish(g *globalFlags) *cobra.Command {
	var rootPath string
	var keyFiles, revoke []string
	var version uint64
	var expires time.Duration
	var keep bool
	c := &cobra.Command{
		Use:   "publish",
		Short: "Sign a key list with a root key and publish it retained (nodes with that root in cloud.root_key_files take it)",
		Long: `Publishes the whole list: the signing keys nodes trust until --expires, and the key ids they refuse
(configured keys included; expiry does not end a revocation). A list replaces the one before it, so a
revocation it leaves out is dropped: --keep starts from the retained list's keys and revocations.
Rotate: publish with the new key added, publish versions with it, then publish without the old key
(or --revoke it). Publish again before --expires: after it, nodes stop trusting the list's keys.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			root, err := readKey(rootPath)
			if err != nil {
				return err
			}
			if expires <= 0 {
				return errors.New("--expires must be a positive duration (e.g. 720h)")
			}
			l := wire.KeyList{Protocol: wire.Protocol, Version: version,
				Expires: time.Now().Add(expires).UTC().Format(time.RFC3339)}
			pubs, err := readPublicKeys(keyFiles)
			if err != nil {
				return err
			}
			listed := map[string]bool{}
			for _, pub := range pubs {
				if id := wire.KeyID(pub); !listed[id] {
					listed[id] = true
					l.Keys = append(l.Keys, wire.ListedKey{KeyID: id, PublicKey: pub})
				}
			}
			l.Revoked = append(l.Revoked, revoke...)
			ctx := cmd.Context()
			tp, link, b, closeLink, err := readRetainedKeyList(ctx, g)
			if err != nil {
				return err
			}
			defer closeLink()
			var cur *wire.KeyList
			if len(b) > 0 {
				prev, _, err := wire.ReadKeyList(b)
				if err != nil {
					return fmt.Errorf("the retained key list on %s is invalid (%w); publish with --version above the nodes' (edgectl status shows it)", tp.Keys(), err)
				}
				cur = &prev
			}
			if keep && cur != nil {
				for _, k := range cur.Keys {
					if !listed[k.KeyID] && !slices.Contains(revoke, k.KeyID) {
						listed[k.KeyID] = true
						l.Keys = append(l.Keys, k)
					}
				}
				for _, id := range cur.Revoked {
					if !slices.Contains(l.Revoked, id) && !listed[id] {
						l.Revoked = append(l.Revoked, id)
					}
				}
			}
			switch {
			case l.Version == 0 && cur != nil:
				l.Version = cur.Version + 1
			case l.Version == 0:
				l.Version = 1
			case cur != nil && l.Version <= cur.Version:
				return fmt.Errorf("--version %d: the retained list is version %d and nodes take only a newer one", l.Version, cur.Version)
			}
			signed, err := wire.SignKeyList(l, root)
			if err != nil {
				return err
			}
			if err := link.Publish(ctx, tp.Keys(), true, signed); err != nil {
				return err
			}
			fmt.Printf("key list version %d signed by root key %s: %d keys, %d revoked, expires %s\n",
				l.Version, wire.KeyID(root.Public().(ed25519.PublicKey)), len(l.Keys), len(l.Revoked), l.Expires)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&rootPath, "root", "", "root private key, PEM (edgectl keygen); nodes list its public half in cloud.root_key_files (required)")
	f.StringArrayVar(&keyFiles, "key", nil, "a signing public key (PEM) nodes trust while the list is in force (repeatable)")
	f.StringArrayVar(&revoke, "revoke", nil, "a key id nodes refuse, configured keys included, while this list or a later one that keeps it is in force (repeatable)")
	f.Uint64Var(&version, "version", 0, "the list's version (default: the retained list's + 1)")
	f.DurationVar(&expires, "expires", 30*24*time.Hour, "nodes stop trusting the listed keys this long from now")
	f.BoolVar(&keep, "keep", false, "also keep the retained list's keys and revocations")
	_ = c.MarkFlagRequired("root")
	return c
}

// keyListJSON is `keys show -o json`.
type keyListJSON struct {
	Version  uint64   `json:"version"`
	Expires  string   `json:"expires"`
	Expired  bool     `json:"expired"`
	SignedBy string   `json:"signed_by"`
	Verified *bool    `json:"verified,omitempty"`
	Keys     []string `json:"keys"`
	Revoked  []string `json:"revoked"`
}

func newKeysShow(g *globalFlags) *cobra.Command {
	var output string
	var rootFiles []string
	c := &cobra.Command{
		Use:   "show",
		Short: "Show the retained key list (with --root-pub, check its signature as nodes do)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			pubs, err := readPublicKeys(rootFiles)
			if err != nil {
				return err
			}
			roots := models.KeySet{}
			for _, pub := range pubs {
				roots.Add(pub)
			}
			tp, _, b, closeLink, err := readRetainedKeyList(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer closeLink()
			if len(b) == 0 {
				return fmt.Errorf("no key list is retained on %s (edgectl keys publish)", tp.Keys())
			}
			l, env, err := wire.ReadKeyList(b)
			if err != nil {
				return fmt.Errorf("the retained key list is invalid: %w", err)
			}
			out := keyListJSON{Version: l.Version, Expires: l.Expires, Expired: l.Expired(time.Now()), SignedBy: env.KeyID,
				Keys: []string{}, Revoked: append([]string{}, l.Revoked...)}
			for _, k := range l.Keys {
				out.Keys = append(out.Keys, k.KeyID)
			}
			if len(roots) > 0 {
				_, verr := wire.DecodeKeyList(b, roots)
				ok := verr == nil
				out.Verified = &ok
				if verr != nil && output != outputJSON {
					fmt.Fprintln(os.Stderr, "edgectl: signature check:", verr)
				}
			}
			if output == outputJSON {
				return writeJSON(out)
			}
			state := "in force"
			if out.Expired {
				state = "EXPIRED: nodes no longer trust its keys"
			}
			fmt.Printf("version %d, signed by root key %s, expires %s (%s)\n", l.Version, env.KeyID, l.Expires, state)
			if out.Verified != nil {
				fmt.Printf("signature: %s\n", map[bool]string{true: "verified", false: "NOT verified by the given root keys"}[*out.Verified])
			}
			fmt.Printf("keys: %s\nrevoked: %s\n", listOrNone(out.Keys), listOrNone(out.Revoked))
			return nil
		},
	}
	c.Flags().StringArrayVar(&rootFiles, "root-pub", nil, "root public key, PEM, to check the signature with (repeatable)")
	addOutputFlag(c, &output)
	return c
}

// readPublicKeys reads PEM public keys (what edgectl keygen writes).
func readPublicKeys(files []string) ([]ed25519.PublicKey, error) {
	var out []ed25519.PublicKey
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		pub, err := models.ParsePublicKeyPEM(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out = append(out, pub)
	}
	return out, nil
}

// readRetainedKeyList connects and reads the retained key list (nil when
// none); closeLink ends the session.
func readRetainedKeyList(ctx context.Context, g *globalFlags) (tp wire.Topics, link *mqttlink.Link, b []byte, closeLink func(), err error) {
	tp, link, closeLink, err = connect(ctx, g)
	if err != nil {
		return tp, nil, nil, nil, err
	}
	got, err := fleet.ReadRetained(ctx, link, tp.Keys(), g.quiet)
	if err != nil {
		closeLink()
		return tp, nil, nil, nil, err
	}
	return tp, link, got[tp.Keys()], closeLink, nil
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
