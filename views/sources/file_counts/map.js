// A source's files by [source id, status, present], with _count: app/sources/files.py reads
// one source's range grouped (group_level=3) for the counts GET /api/sources/<id> shows.
function (doc) {
  if (doc.type === 'sourcefile' && typeof doc.source_id === 'string') {
    emit([doc.source_id, doc.status || null, doc.present === true], null);
  }
}
