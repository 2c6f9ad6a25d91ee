package store

// AttachmentQuery selects one page of a group's attachments for
// ListAttachments. Keys are compared bytewise, as both stores order them,
// so that a page ends at the same key whichever store is asked and the
// next page, asked with After set to that key, neither repeats nor skips
// one.
type AttachmentQuery struct {
	// Prefix keeps the keys that start with it; "" (the default) keeps
	// every key.
	Prefix string
	// After keeps the keys greater than it, to go on from the last key of
	// the previous page; "" (the default) starts from the first key.
	After string
	// Limit bounds how many attachments are returned; 0 (the default) is
	// no bound, for callers that know the group to be small.
	Limit int
}
