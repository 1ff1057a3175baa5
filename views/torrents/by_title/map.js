// Torrents by lower-cased title (else name), value null: the torrents page's listing by name
// (app/web/library.py). Lower case keeps "abba" beside "ABBA" on both servers' collations.
function (doc) {
  if (doc.type === 'torrent') {
    emit(String(doc.title || doc.name || '').toLowerCase(), null);
  }
}
