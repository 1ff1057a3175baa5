// Refuses any change or deletion of an event, and documents without their type's
// required fields, so that neither a bug nor a replicating site can corrupt the log.
// The reason of the immutability refusal starts with "event_immutable": on
// pouchdb-server it also answers the creation of an event id that exists
// (CouchDB answers that with a conflict first), and the app reads both as "taken".
function (newDoc, oldDoc, userCtx, secObj) {
  if (newDoc._id.indexOf('_design/') === 0) {
    return;
  }
  if (oldDoc && oldDoc.type === 'event') {
    throw({forbidden: 'event_immutable: events are never changed or deleted (' + newDoc._id + ')'});
  }
  if (newDoc._deleted) {
    return;
  }
  if (typeof newDoc.type !== 'string' || !newDoc.type) {
    throw({forbidden: 'missing_type: every document needs a "type"'});
  }
  if (newDoc.type === 'event') {
    var fields = ['aggregate', 'version', 'name', 'at', 'actor', 'data'];
    for (var i = 0; i < fields.length; i++) {
      if (newDoc[fields[i]] === undefined || newDoc[fields[i]] === null) {
        throw({forbidden: 'invalid_event: an event needs "' + fields[i] + '"'});
      }
    }
    if (typeof newDoc.version !== 'number' || newDoc.version < 1) {
      throw({forbidden: 'invalid_event: "version" must be a positive number'});
    }
    var padded = String(newDoc.version);
    while (padded.length < 10) {
      padded = '0' + padded;
    }
    if (newDoc._id !== 'ev:' + newDoc.aggregate + ':' + padded) {
      throw({forbidden: 'invalid_event: the id must be ev:<aggregate>:<10-digit version>'});
    }
    return;
  }
  if (newDoc._id.indexOf(newDoc.type + ':') !== 0) {
    throw({forbidden: 'invalid_id: a ' + newDoc.type + ' document id must start with "' + newDoc.type + ':"'});
  }
}
