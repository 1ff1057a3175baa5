// Leased work by [queue, lease expiry (ISO time)], with _count: /stats splits one
// queue's outstanding leases at now into stale (expired, not yet reaped) and active.
// The range holds only outstanding leases, so it stays small as the inventory grows.
function (doc) {
  if (doc.type !== 'event' && doc.state === 'leased' && doc.queue && doc.lease && doc.lease.expires_at) {
    emit([doc.queue, doc.lease.expires_at], null);
  }
}
