package s3_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/mitolab/mito/coordinator/artifacts"
	"github.com/mitolab/mito/coordinator/artifacts/artifactstest"
	"github.com/mitolab/mito/coordinator/artifacts/s3"
	"github.com/mitolab/mito/tasks"
)

// A backend is an S3 server the tests run against: the real one of the test
// script, or gofakes3 in process.
type backend struct {
	name string
	// cfg returns a configuration for a fresh, empty bucket that the test
	// deletes when it ends.
	cfg func(t testing.TB) s3.Config
	// http makes the plain requests of presigned URLs.
	http *http.Client
	// real is set for a server that checks signatures and stores objects
	// as a production one does.
	real bool
}

const howTo = "no S3 server: set MITO_TEST_S3_ENDPOINT (host:port), MITO_TEST_S3_ACCESS_KEY and MITO_TEST_S3_SECRET_KEY, " +
	"or run `make test` (bash .ci/services-up.sh starts versitygw and writes them to .ci/tmp/env)"

// realServer returns the S3 server of the environment, skipping the test
// (failing it under MITO_TEST_REQUIRE) when there is none.
func realServer(t testing.TB) backend {
	t.Helper()
	endpoint := os.Getenv("MITO_TEST_S3_ENDPOINT")
	access, secret := os.Getenv("MITO_TEST_S3_ACCESS_KEY"), os.Getenv("MITO_TEST_S3_SECRET_KEY")
	if endpoint == "" || access == "" || secret == "" {
		if os.Getenv("MITO_TEST_REQUIRE") != "" {
			t.Fatal(howTo)
		}
		t.Skip(howTo)
	}
	return backend{
		name: "real",
		real: true,
		http: http.DefaultClient,
		cfg: func(t testing.TB) s3.Config {
			cfg := s3.Config{Endpoint: endpoint, AccessKey: access, SecretKey: secret, Bucket: newBucketName(t)}
			t.Cleanup(func() { dropBucket(t, cfg) })
			return cfg
		},
	}
}

// fakeServer starts gofakes3 over TLS: over plain HTTP it stores the
// aws-chunked framing of minio-go's streaming signatures in the objects.
// It checks no credentials.
func fakeServer(t testing.TB) backend {
	t.Helper()
	srv := httptest.NewTLSServer(gofakes3.New(s3mem.New()).Server())
	t.Cleanup(srv.Close)
	return backend{
		name: "fake",
		http: srv.Client(),
		cfg: func(t testing.TB) s3.Config {
			return s3.Config{
				Endpoint:  strings.TrimPrefix(srv.URL, "https://"),
				Secure:    true,
				Transport: srv.Client().Transport,
				AccessKey: "fake", SecretKey: "fake-secret",
				Bucket: newBucketName(t),
			}
		},
	}
}

// backends returns the servers a test runs on: gofakes3 always, the real
// server when there is one.
func backends(t *testing.T) []backend {
	t.Helper()
	bs := []backend{fakeServer(t)}
	endpoint := os.Getenv("MITO_TEST_S3_ENDPOINT")
	if endpoint == "" && os.Getenv("MITO_TEST_REQUIRE") == "" {
		t.Log(howTo + "; testing against gofakes3 only")
		return bs
	}
	return append(bs, realServer(t))
}

func newBucketName(t testing.TB) string {
	t.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	return "mito-test-" + hex.EncodeToString(b)
}

func newStore(t testing.TB, cfg s3.Config) *s3.Store {
	t.Helper()
	s, err := s3.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// rawClient is a minio-go client on cfg's server, to look behind the
// Store's back.
func rawClient(t testing.TB, cfg s3.Config) *minio.Client {
	t.Helper()
	c, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:     credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:    cfg.Secure,
		Transport: cfg.Transport,
		Region:    "us-east-1",
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// dropBucket deletes the test's bucket with everything in it, including
// incomplete uploads.
func dropBucket(t testing.TB, cfg s3.Config) {
	ctx := context.Background()
	c := rawClient(t, cfg)
	if ok, err := c.BucketExists(ctx, cfg.Bucket); err != nil || !ok {
		return
	}
	for obj := range c.ListObjects(ctx, cfg.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		if obj.Err == nil {
			c.RemoveObject(ctx, cfg.Bucket, obj.Key, minio.RemoveObjectOptions{})
		}
	}
	for u := range c.ListIncompleteUploads(ctx, cfg.Bucket, "", true) {
		if u.Err == nil {
			c.RemoveIncompleteUpload(ctx, cfg.Bucket, u.Key)
		}
	}
	if err := c.RemoveBucket(ctx, cfg.Bucket); err != nil {
		t.Logf("remove test bucket %s: %v", cfg.Bucket, err)
	}
}

func TestConformance(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			artifactstest.Run(t, func(t *testing.T) artifacts.Store { return newStore(t, b.cfg(t)) })
		})
	}
}

// TestWrongSecret checks that bad credentials stop New with an error that
// names the server and the bucket and does not give the secret away.
// gofakes3 checks no credentials, so only the real server can tell.
func TestWrongSecret(t *testing.T) {
	b := realServer(t)
	cfg := b.cfg(t)
	cfg.SecretKey = "wrong-" + hex.EncodeToString([]byte(cfg.SecretKey))
	_, err := s3.New(context.Background(), cfg)
	if err == nil {
		t.Fatal("New with a wrong secret key succeeded")
	}
	msg := err.Error()
	t.Logf("New with a wrong secret key: %v", err)
	if strings.Contains(msg, cfg.SecretKey) || strings.Contains(msg, os.Getenv("MITO_TEST_S3_SECRET_KEY")) {
		t.Fatalf("New error %q contains the secret key", msg)
	}
	for _, want := range []string{cfg.Endpoint, cfg.Bucket, "secret key"} {
		if !strings.Contains(msg, want) {
			t.Errorf("New error %q does not mention %q", msg, want)
		}
	}
	if fmt.Sprint(cfg) == "" || strings.Contains(fmt.Sprint(cfg), cfg.SecretKey) || strings.Contains(fmt.Sprintf("%+v %#v", cfg, cfg), cfg.SecretKey) {
		t.Errorf("Config prints its secret key: %v", cfg)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  s3.Config
		want string
	}{
		{"no endpoint", s3.Config{Bucket: "b"}, "no endpoint"},
		{"scheme", s3.Config{Endpoint: "http://127.0.0.1:1", Bucket: "b1"}, "without a scheme"},
		{"bucket", s3.Config{Endpoint: "127.0.0.1:1", Bucket: "B_"}, "bucket"},
		{"part size", s3.Config{Endpoint: "127.0.0.1:1", Bucket: "bkt", PartSize: 1 << 20}, "part size"},
		{"prefix", s3.Config{Endpoint: "127.0.0.1:1", Bucket: "bkt", Prefix: "../x"}, "prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s3.New(context.Background(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v; want an error about %q", err, tc.want)
			}
		})
	}
	// Nothing listens on port 1: the error names where it tried.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := s3.New(ctx, s3.Config{Endpoint: "127.0.0.1:1", Bucket: "bkt", AccessKey: "a", SecretKey: "s3cr3t-value"})
	if err == nil || !strings.Contains(err.Error(), "bucket bkt at http://127.0.0.1:1") || strings.Contains(err.Error(), "s3cr3t-value") {
		t.Fatalf("New against a closed port = %v; want an error naming the bucket and endpoint, without the secret", err)
	}
}

// TestPresign checks the URLs the shim and the client will use: a
// presigned PUT stores an object that Stat and Open see, and a presigned
// GET serves it to a plain HTTP client, as an attachment when asked.
func TestPresign(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			s := newStore(t, b.cfg(t))
			data := []byte("uploaded without credentials\n")

			u, err := s.PresignPut(ctx, "tasks/1/1/out/r.txt", 5*time.Minute)
			if err != nil {
				t.Fatalf("PresignPut: %v", err)
			}
			if strings.Contains(u.String(), "SecretKey") {
				t.Fatalf("presigned URL %s looks wrong", u)
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodPut, u.String(), bytes.NewReader(data))
			resp, err := b.http.Do(req)
			if err != nil {
				t.Fatalf("PUT presigned: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("PUT presigned: %s: %s", resp.Status, body)
			}
			size, err := s.Stat(ctx, "tasks/1/1/out/r.txt")
			if err != nil || size != int64(len(data)) {
				t.Fatalf("Stat = %d, %v; want %d", size, err, len(data))
			}
			if _, err := s.Stat(ctx, "tasks/1/1/out/missing"); !errors.Is(err, tasks.ErrNotFound) {
				t.Fatalf("Stat of a missing key = %v; want not found", err)
			}

			u, err = s.PresignGet(ctx, "tasks/1/1/out/r.txt", time.Minute, "résumé r.txt")
			if err != nil {
				t.Fatalf("PresignGet: %v", err)
			}
			resp, err = b.http.Get(u.String())
			if err != nil {
				t.Fatalf("GET presigned: %v", err)
			}
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
				t.Fatalf("GET presigned: %s %q; want 200 %q", resp.Status, body, data)
			}
			if b.real {
				// gofakes3 ignores response-content-disposition.
				if cd := resp.Header.Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment;") || !strings.Contains(cd, "r.txt") {
					t.Errorf("Content-Disposition = %q; want an attachment named résumé r.txt", cd)
				}
				// A tampered signature is refused.
				bad := *u
				q := bad.Query()
				q.Set("X-Amz-Expires", "604800")
				bad.RawQuery = q.Encode()
				resp, err := b.http.Get(bad.String())
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusForbidden {
					t.Errorf("GET with a tampered presigned URL: %s; want 403", resp.Status)
				}
			}
			if _, err := s.PresignGet(ctx, "../x", time.Minute, ""); tasks.ErrorCode(err) != tasks.EInvalid {
				t.Errorf("PresignGet(../x) = %v; want an invalid-key error", err)
			}
			if _, err := s.PresignPut(ctx, "/etc/passwd", time.Minute); tasks.ErrorCode(err) != tasks.EInvalid {
				t.Errorf("PresignPut(/etc/passwd) = %v; want an invalid-key error", err)
			}
		})
	}
}

// pattern yields n pseudo-random bytes without holding them.
type pattern struct {
	rng *mrand.ChaCha8
	n   int64
}

func newPattern(seed byte, n int64) *pattern {
	return &pattern{rng: mrand.NewChaCha8([32]byte{seed}), n: n}
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.n {
		b = b[:p.n]
	}
	p.rng.Read(b)
	p.n -= int64(len(b))
	return len(b), nil
}

func patternSum(seed byte, n int64) string {
	h := sha256.New()
	io.Copy(h, newPattern(seed, n))
	return hex.EncodeToString(h.Sum(nil))
}

// TestMultipart streams a 64 MiB object in 5 MiB parts: it must arrive as
// a 13-part multipart upload, read back with the same sha256, and (on the
// real server, where the bytes leave the process) a Put must not have
// held the object in memory.
func TestMultipart(t *testing.T) {
	const n, part = 64 << 20, 5 << 20
	want := patternSum(7, n)
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			cfg := b.cfg(t)
			cfg.PartSize = part
			s := newStore(t, cfg)

			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			size, sum, err := s.Put(ctx, "big/object", newPattern(7, n))
			runtime.ReadMemStats(&after)
			if err != nil {
				t.Fatalf("Put: %v", err)
			}
			if size != n || sum != want {
				t.Fatalf("Put = %d, %s; want %d, %s", size, sum, n, want)
			}
			// Holding the object would allocate at least n bytes; streaming
			// allocates one part, plus the garbage of signing each 64 KiB
			// chunk (a few percent of n). gofakes3 keeps the object in this
			// process, so only the real server can tell.
			if alloc := after.TotalAlloc - before.TotalAlloc; b.real && alloc > n/2 {
				t.Errorf("Put of %d MiB allocated %d MiB; want a streamed upload holding about one %d MiB part", n>>20, alloc>>20, part>>20)
			} else {
				t.Logf("Put of %d MiB in %d MiB parts allocated %.1f MiB", n>>20, part>>20, float64(alloc)/(1<<20))
			}

			info, err := rawClient(t, cfg).StatObject(ctx, cfg.Bucket, "big/object", minio.StatObjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if b.real && !strings.HasSuffix(info.ETag, "-13") {
				t.Errorf("ETag %q; want a multipart ETag of 13 parts (-13)", info.ETag)
			}

			rc, osize, err := s.Open(ctx, "big/object")
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer rc.Close()
			h := sha256.New()
			read, err := io.Copy(h, rc)
			if err != nil || osize != n || read != n || hex.EncodeToString(h.Sum(nil)) != want {
				t.Fatalf("Open: size %d, read %d, %v, sha256 %x; want %d, %s", osize, read, err, h.Sum(nil), n, want)
			}
		})
	}
}

// failAfter yields n bytes, then fails.
type failAfter struct {
	r io.Reader
	n int64
}

var errBroken = errors.New("broken by test")

func (f *failAfter) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errBroken
	}
	if int64(len(p)) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= int64(n)
	return n, err
}

// TestFailedPutLeavesNothing fails a Put after two parts went up: the
// object must not exist and the multipart upload must be aborted, not left
// to use space.
func TestFailedPutLeavesNothing(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			cfg := b.cfg(t)
			cfg.PartSize = 5 << 20
			s := newStore(t, cfg)
			if _, _, err := s.Put(ctx, "half/done", &failAfter{newPattern(1, 1<<30), 12 << 20}); !errors.Is(err, errBroken) {
				t.Fatalf("Put = %v; want the reader's error", err)
			}
			if _, err := s.Stat(ctx, "half/done"); !errors.Is(err, tasks.ErrNotFound) {
				t.Fatalf("Stat after a failed Put = %v; want not found", err)
			}
			for u := range rawClient(t, cfg).ListIncompleteUploads(ctx, cfg.Bucket, "", true) {
				if u.Err != nil {
					t.Fatalf("list uploads: %v", u.Err)
				}
				t.Errorf("incomplete upload left: %s (%s)", u.Key, u.UploadID)
			}
		})
	}
}

// TestStaleUploadsAborted checks that New aborts the incomplete uploads a
// crashed process left, and only those under its prefix.
func TestStaleUploadsAborted(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			cfg := b.cfg(t)
			cfg.Prefix = "mine"
			newStore(t, cfg) // creates the bucket
			core := minio.Core{Client: rawClient(t, cfg)}
			for _, k := range []string{"mine/crashed", "theirs/running"} {
				if _, err := core.NewMultipartUpload(ctx, cfg.Bucket, k, minio.PutObjectOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			restore := s3.SetStaleUpload(-time.Hour) // anything initiated before an hour from now
			defer restore()
			newStore(t, cfg)
			var left []string
			for u := range core.ListIncompleteUploads(ctx, cfg.Bucket, "", true) {
				if u.Err != nil {
					t.Fatalf("list uploads: %v", u.Err)
				}
				left = append(left, u.Key)
			}
			if len(left) != 1 || left[0] != "theirs/running" {
				t.Fatalf("uploads left: %q; want [theirs/running]", left)
			}
		})
	}
}

// TestPrefix checks that two stores on one bucket with different prefixes
// see only their own objects, stored under their prefix.
func TestPrefix(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			cfg := b.cfg(t)
			cfg.Prefix = "one/"
			one := newStore(t, cfg)
			cfg.Prefix = "two"
			two := newStore(t, cfg)
			for _, s := range []*s3.Store{one, two} {
				if _, _, err := s.Put(ctx, "k", strings.NewReader("v")); err != nil {
					t.Fatal(err)
				}
			}
			if err := one.Delete(ctx, "k"); err != nil {
				t.Fatal(err)
			}
			keys, err := two.List(ctx, "")
			if err != nil || len(keys) != 1 || keys[0] != "k" {
				t.Fatalf("List = %q, %v; want [k]", keys, err)
			}
			var raw []string
			for obj := range rawClient(t, cfg).ListObjects(ctx, cfg.Bucket, minio.ListObjectsOptions{Recursive: true}) {
				raw = append(raw, obj.Key)
			}
			if len(raw) != 1 || raw[0] != "two/k" {
				t.Fatalf("bucket holds %q; want [two/k]", raw)
			}
		})
	}
}

// BenchmarkPut puts 1 MiB objects to the real server.
func BenchmarkPut(b *testing.B) {
	srv := realServer(b)
	artifactstest.BenchPut(b, newStore(b, srv.cfg(b)))
}

// BenchmarkPutLarge puts 64 MiB objects to the real server through the
// Store (streamed, sha256 computed) and, for comparison, with a plain
// minio-go PutObject of the same bytes with a known size.
func BenchmarkPutLarge(b *testing.B) {
	const n = 64 << 20
	srv := realServer(b)
	cfg := srv.cfg(b)
	s := newStore(b, cfg)
	data, _ := io.ReadAll(newPattern(9, n))
	b.Run("store", func(b *testing.B) {
		b.SetBytes(n)
		for b.Loop() {
			if _, _, err := s.Put(context.Background(), "bench/large", bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("minio-go", func(b *testing.B) {
		c := rawClient(b, cfg)
		b.SetBytes(n)
		for b.Loop() {
			if _, err := c.PutObject(context.Background(), cfg.Bucket, "bench/plain", bytes.NewReader(data), n,
				minio.PutObjectOptions{PartSize: 16 << 20}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
