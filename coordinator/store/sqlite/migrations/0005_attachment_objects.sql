-- The artifact store sweep asks whether an object is some attachment's
-- (store.ReferencedObjects): one probe of this index per key, rather than
-- a scan of every attachment.
CREATE INDEX group_attachments_object ON group_attachments (object);
