// Ready work by [queue, queue_group, available_at]: group 0 is never tried, group 1
// retries, so one key range gives never-tried work first, then the retries that are
// due. Queried by app/leasing.py with include_docs (the projection is the candidate).
function (doc) {
  if (doc.type !== 'event' && doc.state === 'ready' && doc.queue) {
    emit([doc.queue, doc.queue_group || 0, doc.available_at || ''], null);
  }
}
