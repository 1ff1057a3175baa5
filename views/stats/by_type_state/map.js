// Projections by [type, state, queue] with _count: the stats snapshot job reads it
// grouped, per type and state and per queue. Events are not counted here.
function (doc) {
  if (doc.type !== 'event' && doc.version) {
    emit([doc.type, doc.state || null, doc.queue || null], null);
  }
}
