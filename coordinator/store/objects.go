package store

import (
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/mitolab/mito/tasks"
)

// MaxObjectBatch bounds the keys of one ReferencedObjects call, so that
// one query stays a bounded amount of work whatever the artifact store
// holds: the sweep asks in batches of this size.
const MaxObjectBatch = 1000

// AttachmentObjectPrefix starts the artifact store key of every
// attachment's bytes ("attachments/<group>/<random hex>").
const AttachmentObjectPrefix = "attachments/"

// ArtifactObjectPrefix starts the artifact store key of every artifact
// ("tasks/<id>/<attempt>/<name>").
const ArtifactObjectPrefix = "tasks/"

// ArtifactObject is an artifact store key read as the artifact it holds.
type ArtifactObject struct {
	Key     string
	Task    tasks.ID
	Attempt int
	Name    string
}

// ParseArtifactKey reads key as "tasks/<id>/<attempt>/<name>", the key the
// coordinator stores an attempt's artifact under. ok is false for a key
// not of that form exactly as the coordinator writes it (IDs and attempts
// positive, in decimal with no leading zero, attempts within 32 bits, a
// name present), which no artifact record can name.
func ParseArtifactKey(key string) (a ArtifactObject, ok bool) {
	rest, ok := strings.CutPrefix(key, ArtifactObjectPrefix)
	if !ok {
		return ArtifactObject{}, false
	}
	idStr, rest, ok1 := strings.Cut(rest, "/")
	attStr, name, ok2 := strings.Cut(rest, "/")
	if !ok1 || !ok2 || name == "" {
		return ArtifactObject{}, false
	}
	id, err1 := strconv.ParseInt(idStr, 10, 64)
	att, err2 := strconv.ParseInt(attStr, 10, 32)
	if err1 != nil || err2 != nil || id <= 0 || att <= 0 ||
		strconv.FormatInt(id, 10) != idStr || strconv.FormatInt(att, 10) != attStr {
		return ArtifactObject{}, false
	}
	return ArtifactObject{Key: key, Task: tasks.ID(id), Attempt: int(att), Name: name}, true
}

// SortObjectKeys splits the keys of a ReferencedObjects call into those
// that may be attachments' objects and those that may be artifacts, for
// the store to look up, and returns as referenced the others, which it
// cannot account for. A key with a NUL or invalid UTF-8, which no store
// key has (artifacts.ValidKey) and a database may refuse as text, is one
// of the others.
func SortObjectKeys(keys []string) (attachments []string, arts []ArtifactObject, other map[string]bool, err error) {
	if len(keys) > MaxObjectBatch {
		return nil, nil, nil, tasks.Invalid("keys", "%d keys is more than the %d one call may ask about", len(keys), MaxObjectBatch)
	}
	other = make(map[string]bool)
	for _, k := range keys {
		if strings.IndexByte(k, 0) >= 0 || !utf8.ValidString(k) {
			other[k] = true
			continue
		}
		if strings.HasPrefix(k, AttachmentObjectPrefix) {
			attachments = append(attachments, k)
			continue
		}
		if a, ok := ParseArtifactKey(k); ok {
			arts = append(arts, a)
			continue
		}
		other[k] = true
	}
	return attachments, arts, other, nil
}
