// Peers database: one row per swarm document, key info_hash, value [seeders, leechers].
// GET /api/counts reads it instead of fetching every swarm with all its peers.
function (doc) {
  if (doc.type === "swarm" && doc.info_hash) {
    emit(doc.info_hash, [doc.seeders || 0, doc.leechers || 0]);
  }
}
