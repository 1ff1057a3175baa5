// One row per snatch recorded in a tracker user's `transferred` events, keyed
// [user_id, info_hash], value the event's time. GET /api/user/<id>/torrents lists
// a user's completed torrents from it (the projection keeps only the count).
function (doc) {
  if (doc.type !== 'event' || doc.name !== 'transferred') return;
  if (typeof doc.aggregate !== 'string' || doc.aggregate.indexOf('trackeruser:') !== 0) return;
  var snatched = doc.data && doc.data.snatched;
  if (!snatched) return;
  var userId = parseInt(doc.aggregate.slice('trackeruser:'.length), 10);
  for (var i = 0; i < snatched.length; i++) {
    emit([userId, snatched[i]], doc.at);
  }
}
