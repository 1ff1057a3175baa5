// Leased work by lease expiry (ISO time), value the queue: the reaper reads
// everything up to now; /stats counts stale (expired, not yet reaped) leases.
function (doc) {
  if (doc.type !== 'event' && doc.state === 'leased' && doc.lease && doc.lease.expires_at) {
    emit(doc.lease.expires_at, doc.queue || null);
  }
}
