// _changes?filter=events/events: only event documents, for the projector,
// the event stream and webhooks (a selector would be ignored by pouchdb-server).
function (doc, req) {
  return doc.type === 'event';
}
