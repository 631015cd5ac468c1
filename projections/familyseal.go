package projections

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	"github.com/auth-platform/tokenservice/signing/seal"
)

// ErrEntryUnreadable is returned (wrapped) for an entry of the families
// read model that does not open with the service's sealer: tampered,
// moved from another key or bucket, sealed under a key the service no
// longer has, or written by a release that did not seal. Such an entry is
// never served; the projector replaces it with the family's last state in
// the log, and `tokenctl projections rebuild` replaces them all.
var ErrEntryUnreadable = errors.New("projections: a families read model entry does not open")

// Labels of token_service_cache_operations_total: the families read model
// is the specification's encrypted cache.
const (
	// CacheRead is a value read from the bucket (the projector's read
	// before each write, each entry ListFamilies reads).
	CacheRead = "read"
	// CacheWrite is a value written (created or replaced by
	// compare-and-set).
	CacheWrite = "write"
	// CacheDelete is the bucket deleted by the projector to rebuild it
	// (values of an earlier release that did not seal them). Entries
	// themselves are never deleted: they expire with their family's last
	// event (a per-key TTL the server applies).
	CacheDelete = "delete"

	// CacheOK is an operation that succeeded (a read whose value opened).
	CacheOK = "ok"
	// CacheMiss is a read that found nothing (no entry for the key, or no
	// family for the subject).
	CacheMiss = "miss"
	// CacheInvalid is a value that does not open (ErrEntryUnreadable): it
	// is never served.
	CacheInvalid = "invalid"
	// CacheConflict is a write that lost a compare-and-set to another
	// projector (retried).
	CacheConflict = "conflict"
	// CacheError is an operation that failed: NATS, or the crypto
	// service that unwraps a data key.
	CacheError = "error"
)

// CacheSeries returns every (operation, status) pair a CacheObserver is
// told of, so that a metric can have each series from start-up.
func CacheSeries() [][2]string {
	return [][2]string{
		{CacheRead, CacheOK}, {CacheRead, CacheMiss}, {CacheRead, CacheInvalid}, {CacheRead, CacheError},
		{CacheWrite, CacheOK}, {CacheWrite, CacheConflict}, {CacheWrite, CacheError},
		{CacheDelete, CacheOK}, {CacheDelete, CacheError},
	}
}

// CacheObserver is told of every operation on the families read model,
// with labels from CacheSeries. It must be safe for concurrent use and
// must not block.
type CacheObserver interface {
	CacheOperation(operation, status string)
}

// familyFormatKey is the bucket metadata that says its values are sealed;
// a bucket without it holds the plain FamilyRecords of an earlier release
// (or none), and the projector rebuilds it.
const (
	familyFormatKey    = "tokenservice.families.format"
	familyFormatSealed = "sealed-1"
)

// familyCodec seals and opens the values of one families bucket and
// counts what it reads. The zero obs counts nothing.
type familyCodec struct {
	sealer *seal.Sealer
	bucket string
	obs    CacheObserver
	onBad  func(key string, err error)
}

// aad binds a value to its bucket and key: a value copied to another
// family's key, or to another deployment's bucket under the same
// ENCRYPTION_KEY, does not open.
func (c familyCodec) aad(key string) []byte {
	return []byte("tokenservice families v1\x00" + c.bucket + "\x00" + key)
}

func (c familyCodec) seal(key string, r *eventsv1.FamilyRecord) ([]byte, error) {
	data, err := proto.Marshal(r)
	if err != nil {
		return nil, err
	}
	sealed, err := c.sealer.Seal(data, c.aad(key))
	if err != nil {
		return nil, fmt.Errorf("families seal %s: %w", key, err)
	}
	return sealed, nil
}

// open opens the value of key and counts the read: ok, invalid (an error
// wrapping ErrEntryUnreadable, reported to onBad), or error (the crypto
// service could not unwrap the value's data key: the value may be fine).
func (c familyCodec) open(key string, value []byte) (*eventsv1.FamilyRecord, error) {
	data, err := c.sealer.Open(value, c.aad(key))
	if err != nil && !errors.Is(err, seal.ErrOpen) && !errors.Is(err, seal.ErrNoWrapper) {
		c.observe(CacheRead, CacheError)
		return nil, fmt.Errorf("families open %s: %w", key, err)
	}
	var r eventsv1.FamilyRecord
	if err == nil {
		err = proto.Unmarshal(data, &r)
	}
	if err != nil {
		err = fmt.Errorf("%w: key %s: %v", ErrEntryUnreadable, key, err)
		c.observe(CacheRead, CacheInvalid)
		if c.onBad != nil {
			c.onBad(key, err)
		}
		return nil, err
	}
	c.observe(CacheRead, CacheOK)
	return &r, nil
}

func (c familyCodec) observe(op, status string) {
	if c.obs != nil {
		c.obs.CacheOperation(op, status)
	}
}
