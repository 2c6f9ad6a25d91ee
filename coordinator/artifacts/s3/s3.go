// Package s3 is an artifacts.Store on an S3-compatible object store (AWS,
// MinIO, Ceph, versitygw, ...) through minio-go.
//
// Objects are streamed: a Put holds at most one part (Config.PartSize) in
// memory however large the object, and S3 makes an object visible only
// when its PUT or CompleteMultipartUpload succeeds, so a failed upload
// leaves nothing behind but an incomplete multipart upload, which minio-go
// aborts on the spot and New sweeps up after a crash.
package s3

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/mitolab/mito/coordinator/artifacts"
	"github.com/mitolab/mito/tasks"
)

// Config says where the store lives. Endpoint and Bucket are required.
type Config struct {
	// Endpoint is host:port of the S3 server, without a scheme.
	Endpoint string
	// Bucket holds the objects; New creates it when missing.
	Bucket string
	// AccessKey and SecretKey sign every request (AWS Signature V4). The
	// secret key never appears in an error, a log line or String().
	AccessKey, SecretKey string
	// Region is the bucket's region. Default "us-east-1".
	Region string
	// Secure selects https. Default false (plain http).
	Secure bool
	// Prefix is prepended to every key inside the bucket, so several
	// installations can share one bucket; a missing trailing "/" is
	// added. Default "" (keys at the top of the bucket).
	Prefix string
	// PartSize is the size of a multipart upload part, and so about the
	// memory one Put holds. An object has at most 10,000 parts, so this
	// also bounds its size (156 GiB at the default). Default 16 MiB;
	// minimum 5 MiB, maximum 5 GiB (the S3 limits).
	PartSize uint64
	// Transport carries the requests. Default minio-go's (http.DefaultTransport
	// settings); tests set it to trust their own TLS certificate.
	Transport http.RoundTripper
}

// String prints the configuration without the secret key.
func (c Config) String() string {
	secret := ""
	if c.SecretKey != "" {
		secret = "[redacted]"
	}
	return fmt.Sprintf("{Endpoint:%s Bucket:%s AccessKey:%s SecretKey:%s Region:%s Secure:%t Prefix:%s PartSize:%d}",
		c.Endpoint, c.Bucket, c.AccessKey, secret, c.Region, c.Secure, c.Prefix, c.PartSize)
}

// GoString keeps %#v from printing the secret key too.
func (c Config) GoString() string { return "s3.Config" + c.String() }

const (
	defaultRegion   = "us-east-1"
	defaultPartSize = 16 << 20
	minPartSize     = 5 << 20
	maxPartSize     = 5 << 30

	// smallObject is the largest object a Put sends as one PUT request; a
	// larger one goes as a multipart upload. Most artifacts are small, and
	// one request is a third of a multipart upload's three.
	smallObject = 1 << 20
)

// staleUpload is how old an incomplete multipart upload must be before New
// aborts it: older than any upload in progress from another coordinator
// sharing the bucket. A variable for tests.
var staleUpload = 24 * time.Hour

// Store is an artifacts.Store in an S3 bucket.
type Store struct {
	client   *minio.Client
	bucket   string
	prefix   string
	partSize uint64
	where    string // "bucket B at https://host:port", for error messages
}

var _ artifacts.Store = (*Store)(nil)

// New connects to the server, checks the credentials and creates the
// bucket when it is missing. It also aborts incomplete multipart uploads
// under Prefix that are more than a day old (left by a crashed process),
// on a best-effort basis.
func New(ctx context.Context, cfg Config) (*Store, error) {
	s, err := newStore(ctx, cfg)
	if err != nil && cfg.SecretKey != "" && strings.Contains(err.Error(), cfg.SecretKey) {
		// No server or library we know of echoes the secret; this makes
		// sure none ever does through us.
		return nil, errors.New(strings.ReplaceAll(err.Error(), cfg.SecretKey, "[redacted]"))
	}
	return s, err
}

func newStore(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Endpoint == "" {
		return nil, errors.New("s3 artifacts: no endpoint")
	}
	if strings.Contains(cfg.Endpoint, "/") {
		return nil, fmt.Errorf("s3 artifacts: endpoint %q: want host:port, without a scheme or path", cfg.Endpoint)
	}
	if err := s3utils.CheckValidBucketName(cfg.Bucket); err != nil {
		return nil, fmt.Errorf("s3 artifacts: bucket %q: %w", cfg.Bucket, err)
	}
	if cfg.Region == "" {
		cfg.Region = defaultRegion
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = defaultPartSize
	}
	if cfg.PartSize < minPartSize || cfg.PartSize > maxPartSize {
		return nil, fmt.Errorf("s3 artifacts: part size %d: want 5 MiB to 5 GiB", cfg.PartSize)
	}
	prefix := cfg.Prefix
	if prefix != "" {
		if err := artifacts.ValidKey(strings.TrimSuffix(prefix, "/")); err != nil {
			return nil, fmt.Errorf("s3 artifacts: prefix: %w", err)
		}
		prefix = strings.TrimSuffix(prefix, "/") + "/"
	}
	scheme := "http"
	if cfg.Secure {
		scheme = "https"
	}
	where := fmt.Sprintf("bucket %s at %s://%s", cfg.Bucket, scheme, cfg.Endpoint)

	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:     credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:    cfg.Secure,
		Region:    cfg.Region,
		Transport: cfg.Transport,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 artifacts: %s: %w", where, err)
	}
	s := &Store{client: client, bucket: cfg.Bucket, prefix: prefix, partSize: cfg.PartSize, where: where}

	exists, err := client.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("s3 artifacts: check %s%s: %w", where, authHint(err), err)
	}
	if !exists {
		err := client.MakeBucket(ctx, cfg.Bucket, minio.MakeBucketOptions{Region: cfg.Region})
		switch code(err) {
		case "", "BucketAlreadyOwnedByYou":
			// Created, by us or by another coordinator starting with us.
		default:
			return nil, fmt.Errorf("s3 artifacts: create %s%s: %w", where, authHint(err), err)
		}
	}
	s.abortStaleUploads(ctx, time.Now().Add(-staleUpload))
	return s, nil
}

// authHint points at the credentials when the server refused them.
func authHint(err error) string {
	switch code(err) {
	case "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidSecretKey", "InvalidToken":
		return " (check the access key and secret key)"
	}
	return ""
}

// code returns the S3 error code of err ("NoSuchKey", ...), or "".
func code(err error) string {
	var e minio.ErrorResponse
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// abortStaleUploads aborts the incomplete multipart uploads under the
// store's prefix initiated before cutoff. minio-go aborts an upload whose
// Put fails; this catches those of a process killed mid-upload. Errors are
// ignored: some servers cannot list uploads, and leftovers cost only space.
func (s *Store) abortStaleUploads(ctx context.Context, cutoff time.Time) {
	core := minio.Core{Client: s.client}
	keyMarker, idMarker := "", ""
	for range 100 { // at most 100 pages of 1000 per start
		res, err := core.ListMultipartUploads(ctx, s.bucket, s.prefix, keyMarker, idMarker, "", 1000)
		if err != nil {
			return
		}
		for _, u := range res.Uploads {
			if !u.Initiated.IsZero() && u.Initiated.Before(cutoff) {
				_ = core.AbortMultipartUpload(ctx, s.bucket, u.Key, u.UploadID)
			}
		}
		if !res.IsTruncated || (res.NextKeyMarker == keyMarker && res.NextUploadIDMarker == idMarker) {
			return
		}
		keyMarker, idMarker = res.NextKeyMarker, res.NextUploadIDMarker
	}
}

// Bucket returns the bucket name.
func (s *Store) Bucket() string { return s.bucket }

func (s *Store) object(key string) string { return s.prefix + key }

// Put implements artifacts.Store. Up to 1 MiB goes as one PUT; anything
// larger is streamed as a multipart upload of PartSize parts, so memory
// stays at about one part whatever the size.
func (s *Store) Put(ctx context.Context, key string, r io.Reader) (int64, string, error) {
	if err := artifacts.ValidKey(key); err != nil {
		return 0, "", err
	}
	if err := ctx.Err(); err != nil {
		return 0, "", fmt.Errorf("put %s: %w", key, err)
	}
	src := &source{ctx: ctx, r: r, h: sha256.New()}

	// Read the first smallObject+1 bytes to tell a small object from a
	// large one.
	buf := headBufs.Get().(*[]byte)
	defer headBufs.Put(buf)
	n, err := io.ReadFull(src, *buf)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return 0, "", fmt.Errorf("put %s: %w", key, err)
	}
	head := (*buf)[:n]
	var info minio.UploadInfo
	if n <= smallObject {
		info, err = s.client.PutObject(ctx, s.bucket, s.object(key), bytes.NewReader(head), int64(n),
			minio.PutObjectOptions{ContentType: "application/octet-stream"})
	} else {
		info, err = s.client.PutObject(ctx, s.bucket, s.object(key), io.MultiReader(bytes.NewReader(head), src), -1,
			minio.PutObjectOptions{ContentType: "application/octet-stream", PartSize: s.partSize})
	}
	if err != nil {
		// The reader's own error, or the cancellation, says more than what
		// minio-go made of it.
		switch {
		case src.err != nil:
			err = src.err
		case ctx.Err() != nil:
			err = ctx.Err()
		}
		return 0, "", fmt.Errorf("put %s: %w", key, err)
	}
	if info.Size != src.n {
		// Cannot happen unless the server lies; do not record a checksum
		// for bytes other than the ones stored.
		return 0, "", fmt.Errorf("put %s: stored %d bytes of %d read", key, info.Size, src.n)
	}
	return src.n, hex.EncodeToString(src.h.Sum(nil)), nil
}

// headBufs holds the buffers Put reads the start of an object into.
var headBufs = sync.Pool{New: func() any { b := make([]byte, smallObject+1); return &b }}

// source reads the caller's reader for a Put: it hashes and counts what
// it reads, stops when the context ends, and remembers the first error,
// which minio-go may otherwise report as something else.
type source struct {
	ctx context.Context
	r   io.Reader
	h   hash.Hash
	n   int64
	err error
}

func (s *source) Read(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		s.err = err
		return 0, err
	}
	n, err := s.r.Read(p)
	s.h.Write(p[:n])
	s.n += int64(n)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

// Open implements artifacts.Store. One GET returns both the size and the
// body, so they always belong to the same version of the object.
func (s *Store) Open(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	if err := artifacts.ValidKey(key); err != nil {
		return nil, 0, err
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("open %s: %w", key, err)
	}
	body, info, _, err := minio.Core{Client: s.client}.GetObject(ctx, s.bucket, s.object(key), minio.GetObjectOptions{})
	if err != nil {
		return nil, 0, s.fail(ctx, "open", key, err)
	}
	return body, info.Size, nil
}

// Stat returns the size of the object at key, or a tasks.ErrNotFound-coded
// error.
func (s *Store) Stat(ctx context.Context, key string) (int64, error) {
	if err := artifacts.ValidKey(key); err != nil {
		return 0, err
	}
	info, err := s.client.StatObject(ctx, s.bucket, s.object(key), minio.StatObjectOptions{})
	if err != nil {
		return 0, s.fail(ctx, "stat", key, err)
	}
	return info.Size, nil
}

// fail wraps an error of a request about key: missing objects become
// tasks.ErrNotFound, and a cancelled context is reported as such.
func (s *Store) fail(ctx context.Context, op, key string, err error) error {
	if c := code(err); c == "NoSuchKey" || c == "NotFound" {
		return &tasks.Error{Code: tasks.ENotFound, Field: "key", Message: fmt.Sprintf("artifact %s: not found", key)}
	}
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		err = ctx.Err()
	}
	return fmt.Errorf("%s %s in %s: %w", op, key, s.where, err)
}

// Delete implements artifacts.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := artifacts.ValidKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	err := s.client.RemoveObject(ctx, s.bucket, s.object(key), minio.RemoveObjectOptions{})
	if err != nil && code(err) != "NoSuchKey" {
		return s.fail(ctx, "delete", key, err)
	}
	return nil
}

// List implements artifacts.Store. prefix is a plain string prefix:
// "tasks/4" lists "tasks/4/..." and "tasks/42/...". Objects in the bucket
// whose names are not valid keys (written by something else) are left out.
func (s *Store) List(ctx context.Context, prefix string) ([]string, error) {
	if strings.ContainsAny(prefix, "\x00\\") || strings.HasPrefix(prefix, "/") || slices.Contains(strings.Split(prefix, "/"), "..") {
		return nil, tasks.Invalid("prefix", "%q is not a key prefix", prefix)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list %s: %w", prefix, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops minio-go's listing goroutine if we return early
	keys := []string{}
	for obj := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.object(prefix), Recursive: true}) {
		if obj.Err != nil {
			return nil, s.fail(ctx, "list", prefix, obj.Err)
		}
		key, ok := strings.CutPrefix(obj.Key, s.prefix)
		if ok && artifacts.ValidKey(key) == nil {
			keys = append(keys, key)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list %s: %w", prefix, err)
	}
	slices.Sort(keys)
	return keys, nil
}

// PresignPut returns a URL that lets whoever holds it PUT the object at
// key (one request, up to 5 GiB) until expiry passes, without credentials.
// expiry is 1 second to 7 days.
func (s *Store) PresignPut(ctx context.Context, key string, expiry time.Duration) (*url.URL, error) {
	if err := artifacts.ValidKey(key); err != nil {
		return nil, err
	}
	u, err := s.client.PresignedPutObject(ctx, s.bucket, s.object(key), expiry)
	if err != nil {
		return nil, fmt.Errorf("presign put %s: %w", key, err)
	}
	return u, nil
}

// PresignGet returns a URL that lets whoever holds it GET the object at key
// until expiry passes, without credentials. A non-empty filename makes the
// response an attachment of that name (Content-Disposition), so a browser
// saves it under the artifact's name rather than the key's.
func (s *Store) PresignGet(ctx context.Context, key string, expiry time.Duration, filename string) (*url.URL, error) {
	if err := artifacts.ValidKey(key); err != nil {
		return nil, err
	}
	params := url.Values{}
	if filename != "" {
		cd := mime.FormatMediaType("attachment", map[string]string{"filename": filename})
		if cd == "" {
			return nil, tasks.Invalid("filename", "%q cannot be sent in a Content-Disposition", filename)
		}
		params.Set("response-content-disposition", cd)
	}
	u, err := s.client.PresignedGetObject(ctx, s.bucket, s.object(key), expiry, params)
	if err != nil {
		return nil, fmt.Errorf("presign get %s: %w", key, err)
	}
	return u, nil
}
