// _changes?filter=log/events on the event log: event documents only (not design
// documents), for consumers that follow the log (a selector would be ignored by
// pouchdb-server).
function (doc, req) {
  return doc.type === 'event';
}
