// Ready work by [queue, queue_group, available_at, id]: group 0 is never tried, group 1
// retries, so one key range gives never-tried work first, then the retries that are
// due. The id makes every key unique, so app/queues/leasing.py can walk on from a cursor
// (startkey + skip=1; pouchdb-server ignores startkey_docid). Queried with include_docs.
function (doc) {
  if (doc.type !== 'event' && doc.state === 'ready' && doc.queue) {
    emit([doc.queue, doc.queue_group || 0, doc.available_at || '', doc._id], null);
  }
}
