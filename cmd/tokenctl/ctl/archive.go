package ctl

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/events"
)

// An archive of the log is a folder of files named
// <stream>-<first seq>-<last seq>.jsonl (sequences zero-padded to 20
// digits, so names sort in stream order), each holding one
// eventlog.Stored message per line in stream order: subject, sequence,
// time, every header (the Token-Auth MAC, the TTL, the compare-and-set
// subject) and the payload, so the MAC of an event can be checked with
// ENCRYPTION_KEY after it has left the stream. Grace records (sealed
// successor responses, not events) are left out. A file is written under
// a temporary name and renamed when complete, so a file with an archive
// name is whole.

const archiveExt = ".jsonl"

// maxArchiveLine bounds one line of an archive: the log's largest
// message (256 KiB payload, base64) with its headers.
const maxArchiveLine = 1 << 20

// archiveName returns the file name of the archive of seqs first..last.
func archiveName(stream string, first, last uint64) string {
	return fmt.Sprintf("%s-%020d-%020d%s", stream, first, last, archiveExt)
}

// archiveFile is one archive file and the range its name states.
type archiveFile struct {
	path        string
	first, last uint64
}

// archiveFiles returns the archive files of stream in dir, in stream
// order. Other files are ignored.
func archiveFiles(dir, stream string) ([]archiveFile, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	var out []archiveFile
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || !strings.HasPrefix(name, stream+"-") || !strings.HasSuffix(name, archiveExt) {
			continue
		}
		var f archiveFile
		rng := strings.TrimSuffix(strings.TrimPrefix(name, stream+"-"), archiveExt)
		if n, err := fmt.Sscanf(rng, "%d-%d", &f.first, &f.last); n != 2 || err != nil || archiveName(stream, f.first, f.last) != name {
			continue
		}
		f.path = filepath.Join(dir, name)
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].first < out[j].first })
	return out, nil
}

// exportArchive writes the messages from from (0: after the last archived
// one) to to (0: the end when the export starts) to one new archive file
// in dir.
func (o *options) exportArchive(ctx context.Context, dir string, from, to uint64) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	files, err := archiveFiles(dir, o.stream)
	if err != nil {
		return err
	}
	if from == 0 {
		from = 1
		if len(files) > 0 {
			from = files[len(files)-1].last + 1
		}
	}
	if to == 0 {
		if to, err = o.log.LastSeq(ctx); err != nil {
			return err
		}
	}
	if to < from {
		fmt.Fprintf(o.stderr, "nothing to archive after seq %d\n", from-1)
		return nil
	}
	tmp, err := os.CreateTemp(dir, ".export-*")
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename, there is none
	w := bufio.NewWriter(tmp)
	enc := json.NewEncoder(w)
	p := newProgress(o.stderr, "archived")
	var first uint64
	var werr error
	err = o.log.ReplayStored(ctx, from, []string{o.log.Subjects().All()}, func(s eventlog.Stored) {
		if s.Seq > to || werr != nil || s.Header.Get(eventlog.HeaderEvent) == events.TypeGrace {
			return
		}
		if werr = enc.Encode(s); werr == nil && first == 0 {
			first = s.Seq
		}
		p.add(0)
	})
	p.done()
	if err == nil {
		err = werr
	}
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	if first == 0 {
		fmt.Fprintf(o.stderr, "nothing to archive in seq %d..%d\n", from, to)
		return nil
	}
	// The name states the range asked for, so the next export continues
	// after it even when its last messages had expired or were grace
	// records.
	name := filepath.Join(dir, archiveName(o.stream, from, to))
	if err := os.Rename(tmp.Name(), name); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	fmt.Fprintf(o.stdout, "%s\n", name)
	return nil
}

// archived delivers the records of the archive (--archive) on filters,
// in stream order, with their MACs checked as every read of the log
// checks them (forged ones are reported and skipped). Without --archive
// it delivers nothing.
func (o *options) archived(filters []string, fn func(eventlog.Record)) error {
	if o.archive == "" {
		return nil
	}
	files, err := archiveFiles(o.archive, o.stream)
	if err != nil {
		return err
	}
	for _, f := range files {
		if err := o.readArchive(f.path, filters, fn); err != nil {
			return err
		}
	}
	return nil
}

func (o *options) readArchive(path string, filters []string, fn func(eventlog.Record)) error {
	file, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	sc.Buffer(make([]byte, 64<<10), maxArchiveLine)
	for n := 1; sc.Scan(); n++ {
		var s eventlog.Stored
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			return fmt.Errorf("archive %s line %d: %w", filepath.Base(path), n, err)
		}
		if !matchesAny(filters, s.Subject) {
			continue
		}
		rec, err := o.log.Restore(s)
		if errors.Is(err, eventlog.ErrForged) {
			continue // reported by the log, like a forged record of the stream
		}
		if err != nil {
			return fmt.Errorf("archive %s line %d: %w", filepath.Base(path), n, err)
		}
		fn(rec)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("archive %s: %w", filepath.Base(path), err)
	}
	return nil
}

// records returns the records on filters of the archive and of the live
// stream, each once (by sequence), in stream order.
func (o *options) records(ctx context.Context, filters []string) ([]eventlog.Record, error) {
	var recs []eventlog.Record
	seen := map[uint64]bool{}
	add := func(r eventlog.Record) {
		if !seen[r.Seq] {
			seen[r.Seq] = true
			recs = append(recs, r)
		}
	}
	if err := o.archived(filters, add); err != nil {
		return nil, err
	}
	if err := o.log.Replay(ctx, 1, filters, add); err != nil {
		return nil, err
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Seq < recs[j].Seq })
	return recs, nil
}

// matchesAny reports whether subject matches one of the NATS filters
// (tokens separated by dots, * for one token, > for the rest).
func matchesAny(filters []string, subject string) bool {
	for _, f := range filters {
		if matches(f, subject) {
			return true
		}
	}
	return false
}

func matches(filter, subject string) bool {
	ft, st := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, t := range ft {
		switch {
		case t == ">":
			return len(st) > i
		case i >= len(st):
			return false
		case t != "*" && t != st[i]:
			return false
		}
	}
	return len(ft) == len(st)
}
