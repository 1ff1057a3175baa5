// A source's files by [source id, filename], value [status, present]: app/sources/files.py
// pages a source's files in name order (GET /api/sources/<id>/files, include_docs) and
// collects the names present locally for a worker's known_files (values only).
function (doc) {
  if (doc.type === 'sourcefile' && typeof doc.source_id === 'string' && typeof doc.filename === 'string') {
    emit([doc.source_id, doc.filename], [doc.status || null, doc.present === true]);
  }
}
