// Torrent files by [normalised relative path, size], value null: app/ingest/match.py looks up
// a listing's files with POST keys to find the torrents it may hold. Keys are computed
// in Python (metainfo/names.py normalize_path) and only ever looked up exactly.
// Padding files (BEP 47) are never on disk, so they are not emitted.
function (doc) {
  if (doc.type === 'torrent' && doc.files) {
    for (var i = 0; i < doc.files.length; i++) {
      var file = doc.files[i];
      if (!file.pad && typeof file.key === 'string') {
        emit([file.key, file.size], null);
      }
    }
  }
}
