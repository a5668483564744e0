package store

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/models/catalog"
)

// GC removes, in this order:
//
//  1. version records beyond the ones kept: per model, the Active, Canary
//     and Previous versions, every serving version, every version still
//     being fetched (Announced, Downloading, Verifying), and the
//     Options.KeepVersions newest of the rest;
//  2. blobs no remaining version references (and their chunk-index entries);
//  3. ingests that no remaining fetchable version wants (records and files),
//     and ingest folders with no record and no open writer in this process;
//  4. materialised folders of versions that are gone or have no files.
//
// GC holds the store's GC lock exclusively, so no import is half-recorded
// while it runs. It never removes anything a serving version uses.
func (s *Store) GC(ctx context.Context) (models.GCStats, error) {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	var st models.GCStats

	// 1 + bookkeeping, in one transaction.
	referenced := map[string]bool{}
	wanted := map[string]bool{} // blobs of versions that may still fetch them
	keptVersions := map[string]bool{}
	var ingests []catalog.IngestRecord
	err := s.cat.Update(ctx, func(tx *catalog.Tx) error {
		all, err := tx.Models()
		if err != nil {
			return err
		}
		for _, mi := range all {
			var rest []models.VersionInfo
			for _, v := range mi.Versions {
				switch {
				case v.Version == mi.Active || v.Version == mi.Canary || v.Version == mi.Previous,
					v.State.Serving(),
					v.State == models.Announced || v.State == models.Downloading || v.State == models.Verifying:
					s.keep(v, referenced, wanted, keptVersions)
				default:
					rest = append(rest, v)
				}
			}
			sort.SliceStable(rest, func(i, j int) bool { return rest[i].Created.After(rest[j].Created) })
			for i, v := range rest {
				if i < s.opts.KeepVersions {
					s.keep(v, referenced, wanted, keptVersions)
					continue
				}
				if err := tx.DeleteVersion(mi.Name, v.Version); err != nil {
					return err
				}
				st.Versions++
			}
		}
		ingests, err = tx.Ingests()
		return err
	})
	if err != nil {
		return st, err
	}

	// 2. Blobs.
	var dead []string
	err = s.blobs.Walk(ctx, func(digest string, size int64) error {
		if !referenced[digest] {
			dead = append(dead, digest)
			st.BlobBytes += size
		}
		return nil
	})
	if err != nil {
		return st, err
	}
	if len(dead) > 0 {
		if err := s.cat.Update(ctx, func(tx *catalog.Tx) error {
			for _, d := range dead {
				if err := tx.UnindexBlob(d); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return st, err
		}
		for _, d := range dead {
			if err := s.blobs.Delete(d); err != nil {
				return st, err
			}
			st.Blobs++
		}
	}

	// 3. Ingests.
	keepIngest := map[string]bool{}
	var dropRecs []string
	for _, r := range ingests {
		if wanted[r.Blob] {
			keepIngest[r.Blob] = true
		} else {
			dropRecs = append(dropRecs, r.Blob)
		}
	}
	if len(dropRecs) > 0 {
		if err := s.cat.Update(ctx, func(tx *catalog.Tx) error {
			for _, b := range dropRecs {
				if err := tx.DeleteIngest(b); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return st, err
		}
	}
	refs, err := s.blobs.Ingests()
	if err != nil {
		return st, err
	}
	for _, ref := range refs {
		if keepIngest[ref] || s.blobs.IngestActive(ref) {
			continue
		}
		if err := s.blobs.RemoveIngest(ref); err != nil {
			return st, err
		}
		st.Ingests++
	}

	// 4. Materialised folders.
	root := filepath.Join(s.opts.Root, "versions")
	mdirs, err := os.ReadDir(root)
	if err != nil {
		return st, err
	}
	for _, md := range mdirs {
		vdirs, err := os.ReadDir(filepath.Join(root, md.Name()))
		if err != nil {
			continue
		}
		for _, vd := range vdirs {
			if keptVersions[md.Name()+"/"+vd.Name()] && !strings.HasPrefix(vd.Name(), ".tmp-") {
				continue
			}
			if err := os.RemoveAll(filepath.Join(root, md.Name(), vd.Name())); err != nil {
				return st, err
			}
			st.Materialised++
		}
	}
	s.gcRemoved.WithLabelValues("version").Add(float64(st.Versions))
	s.gcRemoved.WithLabelValues("blob").Add(float64(st.Blobs))
	s.gcRemoved.WithLabelValues("ingest").Add(float64(st.Ingests))
	s.log.Info().Int("versions", st.Versions).Int("blobs", st.Blobs).Int64("bytes", st.BlobBytes).Int("ingests", st.Ingests).Msg("gc done")
	return st, nil
}

func (s *Store) keep(v models.VersionInfo, referenced, wanted, kept map[string]bool) {
	fetching := v.State == models.Announced || v.State == models.Downloading || v.State == models.Verifying || v.State == models.Failed
	for _, f := range v.Manifest.Files {
		if f.SHA256 == "" {
			continue
		}
		referenced[f.SHA256] = true
		if fetching {
			wanted[f.SHA256] = true
		}
	}
	if v.State.HasBlobs() {
		kept[v.Model+"/"+v.Version] = true
	}
}
