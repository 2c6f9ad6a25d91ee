package s3

import "time"

// SetStaleUpload sets the age past which New aborts incomplete uploads and
// returns a function that restores it.
func SetStaleUpload(d time.Duration) (restore func()) {
	old := staleUpload
	staleUpload = d
	return func() { staleUpload = old }
}
