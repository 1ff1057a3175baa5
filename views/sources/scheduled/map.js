// Enabled sources that have a schedule, by source id, value null: the queue_due_syncs job
// (app/sources/jobs.py) reads them with include_docs and decides in Python which are due.
function (doc) {
  if (doc.type === 'source' && doc.enabled === true && doc.schedule) {
    emit(doc.id, null);
  }
}
