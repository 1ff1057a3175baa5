// One row per change: key [aggregate, version, site, event id], value [name, data,
// at, actor]. One aggregate's rows are contiguous and in fold order, so repairing a
// projection reads one key range and a rebuild pages the whole view with flat memory.
function (doc) {
  if (doc.type !== 'event' || !doc.changes) return;
  for (var i = 0; i < doc.changes.length; i++) {
    var c = doc.changes[i];
    emit([c.aggregate, c.version, doc.site, doc._id], [c.name, c.data, doc.at, doc.actor]);
  }
}
