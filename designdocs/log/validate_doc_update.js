// The event log's only guard, and the only validate_doc_update anywhere: it runs
// for every document written to the log, local or replicated, so neither a bug
// nor another site can change a fact or store anything but well-formed events.
// The reason of the immutability refusal starts with "event_immutable": on
// pouchdb-server it also answers the creation of an event id that exists
// (CouchDB answers that with a conflict first); both mean "already recorded".
function (newDoc, oldDoc, userCtx, secObj) {
  if (newDoc._id.indexOf('_design/') === 0) {
    return;
  }
  if (oldDoc) {
    throw({forbidden: 'event_immutable: events are never changed or deleted (' + newDoc._id + ')'});
  }
  if (newDoc._deleted) {
    throw({forbidden: 'event_immutable: events are never deleted (' + newDoc._id + ')'});
  }
  if (newDoc.type !== 'event') {
    throw({forbidden: 'invalid_event: the event log holds only documents of type "event"'});
  }
  if (newDoc._id.indexOf('ev:') !== 0) {
    throw({forbidden: 'invalid_event: an event id starts with "ev:"'});
  }
  var fields = ['name', 'at', 'actor', 'site'];
  for (var i = 0; i < fields.length; i++) {
    if (typeof newDoc[fields[i]] !== 'string' || !newDoc[fields[i]]) {
      throw({forbidden: 'invalid_event: an event needs a non-empty "' + fields[i] + '"'});
    }
  }
  var changes = newDoc.changes;
  if (!changes || typeof changes.length !== 'number' || changes.length < 1) {
    throw({forbidden: 'invalid_event: an event needs a non-empty "changes" list'});
  }
  for (var j = 0; j < changes.length; j++) {
    var c = changes[j];
    if (!c || typeof c.aggregate !== 'string' || c.aggregate.indexOf(':') < 1) {
      throw({forbidden: 'invalid_event: a change needs an "aggregate" id <type>:<key>'});
    }
    if (typeof c.version !== 'number' || c.version < 1 || c.version % 1 !== 0) {
      throw({forbidden: 'invalid_event: a change needs a positive integer "version"'});
    }
    if (typeof c.name !== 'string' || !c.name || !c.data || typeof c.data !== 'object') {
      throw({forbidden: 'invalid_event: a change needs a "name" and a "data" object'});
    }
  }
}
