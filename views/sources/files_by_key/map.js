// Source files present locally by [normalised location (content-root relative), size],
// value the source id: the ingest side looks up files it finds on the content volume
// with POST keys, exactly as matching/by_file does for torrents (keys computed in Python
// by metainfo/names.py normalize_path, stored as `key` by the projector).
function (doc) {
  if (doc.type === 'sourcefile' && doc.present === true && typeof doc.key === 'string' && typeof doc.size === 'number') {
    emit([doc.key, doc.size], doc.source_id);
  }
}
