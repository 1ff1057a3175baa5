// Torrents by the time they were registered, value null: the torrents page's newest-first
// listing (app/web/library.py), paged with descending=true, limit and skip.
function (doc) {
  if (doc.type === 'torrent' && doc.registered_at) {
    emit(doc.registered_at, null);
  }
}
