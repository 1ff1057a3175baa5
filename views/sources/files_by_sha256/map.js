// Source files present locally by SHA-256 (lower-case hex), value [source id, location]:
// the ingest side recognises a file's content wherever it was found.
function (doc) {
  if (doc.type === 'sourcefile' && doc.present === true && typeof doc.sha256 === 'string') {
    emit(doc.sha256, [doc.source_id, doc.location]);
  }
}
