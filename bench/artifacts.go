package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/mitolab/mito/coordinator"
	"github.com/mitolab/mito/coordinator/artifacts/s3"
	"github.com/mitolab/mito/coordinator/store/sqlite"
	"github.com/mitolab/mito/inventory"
	"github.com/mitolab/mito/tasks"
)

// s3Env is the S3 server of .ci/services-up.sh (MITO_TEST_S3_*).
type s3Env struct{ endpoint, access, secret string }

// runArtifacts measures artifact throughput against the S3 server of
// MITO_TEST_S3_*: a plain minio-go PutObject of a random file of
// -artifact-size bytes, then a task's artifact of the same size through a
// local host with `artifacts: direct` and one with `artifacts: relay`,
// -artifact-runs times each, and prints the medians and their ratios to
// the plain PutObject as a markdown table.
//
// The task hard-links the pre-made file into its output directory and
// writes the time it did so; the upload time is the task's finished_at
// (recorded by the coordinator once the shim has shipped the artifacts and
// reported) minus that time, so neither writing the file nor starting the
// task counts.
func runArtifacts(o options) error {
	env := s3Env{os.Getenv("MITO_TEST_S3_ENDPOINT"), os.Getenv("MITO_TEST_S3_ACCESS_KEY"), os.Getenv("MITO_TEST_S3_SECRET_KEY")}
	if env.endpoint == "" || env.access == "" || env.secret == "" {
		return errors.New("-artifacts needs MITO_TEST_S3_ENDPOINT, MITO_TEST_S3_ACCESS_KEY and MITO_TEST_S3_SECRET_KEY (bash .ci/services-up.sh; source .ci/tmp/env)")
	}
	if o.artifactSize < 1 || o.artifactRuns < 1 {
		return errors.New("-artifact-size and -artifact-runs must be positive")
	}
	shim, err := filepath.Abs(o.shim)
	if err != nil {
		return err
	}
	if _, err := os.Stat(shim); err != nil {
		return fmt.Errorf("shim: %w (run make build)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	dir, err := os.MkdirTemp("", "mito-bench-artifacts-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	blob := filepath.Join(dir, "blob")
	if err := randomFile(blob, o.artifactSize); err != nil {
		return err
	}
	mc, err := minio.New(env.endpoint, &minio.Options{Creds: credentials.NewStaticV4(env.access, env.secret, "")})
	if err != nil {
		return err
	}

	plain, err := plainPuts(ctx, mc, blob, o.artifactSize, o.artifactRuns)
	if err != nil {
		return fmt.Errorf("plain PutObject: %w", err)
	}
	direct, err := mitoUploads(ctx, o, env, mc, dir, shim, blob, inventory.ArtifactsDirect)
	if err != nil {
		return fmt.Errorf("direct: %w", err)
	}
	relay, err := mitoUploads(ctx, o, env, mc, dir, shim, blob, inventory.ArtifactsRelay)
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}

	mbps := func(d time.Duration) float64 { return float64(o.artifactSize) / 1e6 / d.Seconds() }
	base := mbps(median(plain))
	if o.header {
		fmt.Printf("| upload of %d MiB | MB/s (median of %d) | runs | vs plain PutObject |\n", o.artifactSize>>20, o.artifactRuns)
		fmt.Println("|---|---:|---|---:|")
	}
	for _, row := range []struct {
		name string
		ds   []time.Duration
	}{
		{"plain minio-go `PutObject`", plain},
		{"mito, `artifacts: direct`", direct},
		{"mito, `artifacts: relay`", relay},
	} {
		var runs []string
		for _, d := range row.ds {
			runs = append(runs, fmt.Sprintf("%.0f", mbps(d)))
		}
		fmt.Printf("| %s | %.0f | %s | %.2f |\n", row.name, mbps(median(row.ds)), strings.Join(runs, ", "), mbps(median(row.ds))/base)
	}
	return nil
}

// randomFile writes size random bytes to path.
func randomFile(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// plainPuts uploads path (size bytes) with minio-go's PutObject, with its
// defaults, into a fresh bucket, n times, and returns the times.
func plainPuts(ctx context.Context, mc *minio.Client, path string, size int64, n int) ([]time.Duration, error) {
	bucket := fmt.Sprintf("mito-bench-plain-%d", time.Now().UnixNano())
	if err := mc.MakeBucket(ctx, bucket, minio.MakeBucketOptions{}); err != nil {
		return nil, err
	}
	defer dropBucket(mc, bucket)
	var ds []time.Duration
	for i := range n {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		t0 := time.Now()
		info, err := mc.PutObject(ctx, bucket, fmt.Sprintf("blob-%d", i), f, size, minio.PutObjectOptions{ContentType: "application/octet-stream"})
		d := time.Since(t0)
		f.Close()
		if err != nil {
			return nil, err
		}
		if info.Size != size {
			return nil, fmt.Errorf("put %d bytes, the server took %d", size, info.Size)
		}
		ds = append(ds, d)
	}
	return ds, nil
}

// mitoUploads starts a coordinator whose artifacts are in a fresh bucket,
// with one local host in the given artifacts mode, runs o.artifactRuns
// tasks one after the other that each hard-link blob into their output
// directory, and returns for each the time from the link to finished_at.
func mitoUploads(ctx context.Context, o options, env s3Env, mc *minio.Client, dir, shim, blob, mode string) ([]time.Duration, error) {
	sub, err := os.MkdirTemp(dir, mode+"-")
	if err != nil {
		return nil, err
	}
	st, err := sqlite.Open(ctx, filepath.Join(sub, "mito.db"))
	if err != nil {
		return nil, err
	}
	defer st.Close()
	bucket := fmt.Sprintf("mito-bench-%s-%d", mode, time.Now().UnixNano())
	arts, err := s3.New(ctx, s3.Config{Endpoint: env.endpoint, Bucket: bucket, AccessKey: env.access, SecretKey: env.secret})
	if err != nil {
		return nil, err
	}
	defer dropBucket(mc, bucket)
	level := slog.LevelWarn
	if o.verbose {
		level = slog.LevelInfo
	}
	in, err := start(ctx, st, sub, coordinator.Config{
		Hosts: []inventory.Host{{
			Name: "bench1", Transport: inventory.TransportLocal,
			Groups: []string{group}, Slots: 1, Artifacts: mode,
		}},
		Artifacts:   arts,
		Logger:      slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
		ShimCommand: []string{shim, "-work-dir", filepath.Join(sub, "work")},
	})
	if err != nil {
		return nil, err
	}
	defer in.shutdown()
	if err := waitHostsReady(ctx, in.cl, 1); err != nil {
		return nil, err
	}
	size, err := fileSize(blob)
	if err != nil {
		return nil, err
	}
	var ds []time.Duration
	for i := range o.artifactRuns {
		stamp := filepath.Join(sub, fmt.Sprintf("linked-%d", i))
		t, err := in.cl.Submit(ctx, tasks.Spec{Group: group, Command: []string{"sh", "-c",
			`ln "$1" "$MITO_OUTPUT_DIR/blob" && date +%s%N > "$2"`, "sh", blob, stamp}})
		if err != nil {
			return nil, fmt.Errorf("submit: %w", err)
		}
		for !t.State.Final() {
			if t, err = in.cl.WaitTask(ctx, t.ID, 20*time.Second); err != nil {
				return nil, fmt.Errorf("wait for task %d: %w", t.ID, err)
			}
		}
		if t.State != tasks.Succeeded || t.FinishedAt == nil {
			return nil, fmt.Errorf("task %d is %s (%s); want succeeded", t.ID, t.State, t.Error)
		}
		as, err := in.cl.ListArtifacts(ctx, t.ID)
		if err != nil {
			return nil, fmt.Errorf("list artifacts: %w", err)
		}
		if len(as) != 1 || as[0].Size != size {
			return nil, fmt.Errorf("task %d: artifacts %+v; want blob of %d bytes", t.ID, as, size)
		}
		b, err := os.ReadFile(stamp)
		if err != nil {
			return nil, err
		}
		ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("the task's time stamp: %w", err)
		}
		d := t.FinishedAt.Sub(time.Unix(0, ns))
		if d <= 0 {
			return nil, fmt.Errorf("task %d finished %s before it linked its file", t.ID, -d)
		}
		ds = append(ds, d)
	}
	return ds, nil
}

func fileSize(path string) (int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// dropBucket removes every object of bucket, then bucket, on a
// best-effort basis.
func dropBucket(mc *minio.Client, bucket string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for obj := range mc.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
		if obj.Err == nil {
			_ = mc.RemoveObject(ctx, bucket, obj.Key, minio.RemoveObjectOptions{})
		}
	}
	if err := mc.RemoveBucket(ctx, bucket); err != nil {
		fmt.Fprintf(os.Stderr, "bench: remove bucket %s: %v\n", bucket, err)
	}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
