// _changes?filter=tracker/directory: the projection documents (never events) of
// tracked torrents, tracker users and whitelist entries. The tracker process
// follows it to learn registrations, deletions and passkey changes within a moment.
function (doc, req) {
  return doc.type === 'tracked' || doc.type === 'trackeruser' || doc.type === 'whitelist';
}
