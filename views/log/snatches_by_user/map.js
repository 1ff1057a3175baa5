// One row per snatch recorded in a tracker user's changes (any change whose data
// lists `snatched` info hashes), keyed [user_id, info_hash], value the event's time.
// GET /api/user/<id>/torrents lists a user's completed torrents from it (the
// projection keeps only the count). It reads the log, so it survives a rebuild.
function (doc) {
  if (doc.type !== 'event' || !doc.changes) return;
  for (var i = 0; i < doc.changes.length; i++) {
    var c = doc.changes[i];
    if (typeof c.aggregate !== 'string' || c.aggregate.indexOf('trackeruser:') !== 0) continue;
    var snatched = c.data && c.data.snatched;
    if (!snatched) continue;
    var userId = parseInt(c.aggregate.slice('trackeruser:'.length), 10);
    for (var j = 0; j < snatched.length; j++) {
      emit([userId, snatched[j]], doc.at);
    }
  }
}
