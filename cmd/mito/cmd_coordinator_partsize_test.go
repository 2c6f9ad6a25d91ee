package main

import (
	"strings"
	"testing"

	"github.com/mitolab/mito/coordinator/artifacts/s3"
)

// TestS3PartSizeIsChecked: --s3-part-size outside what S3 allows is a
// usage error that names the flag, found before any S3 server is asked.
func TestS3PartSizeIsChecked(t *testing.T) {
	t.Setenv("MITO_S3_SECRET_KEY", "secret")
	for _, size := range []string{"1MiB", "6GiB", "lots", ""} {
		opts := coordinatorOptions{s3: s3.Config{Endpoint: "127.0.0.1:1", Bucket: "b", AccessKey: "a"}, s3PartSize: size}
		_, _, err := openArtifacts(t.Context(), opts)
		if err == nil || exitCode(err, &strings.Builder{}) != exitUsage || !strings.Contains(err.Error(), "--s3-part-size") {
			t.Errorf("--s3-part-size %q: %v; want a usage error naming the flag", size, err)
		}
	}
}
