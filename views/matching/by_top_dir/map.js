// Torrents by normalised top directory (a single-file torrent: its file name), value
// null, and under the same key one row per download task of the torrent whose value
// {_id: <task id>} links that task (CouchDB's linked documents). app/ingest/match.py reads
// one key with include_docs: a same-named torrent and the state of its tasks come in
// one request (to decide a match and to report why a same-named torrent did not match).
// Exact-key lookups only (keys are not ASCII-safe for range reads).
function (doc) {
  if (doc.type === 'torrent' && typeof doc.match_dir === 'string' && doc.match_dir) {
    emit(doc.match_dir, null);
    var tasks = doc.task_ids || [];
    for (var i = 0; i < tasks.length; i++) {
      emit(doc.match_dir, {_id: tasks[i]});
    }
  }
}
