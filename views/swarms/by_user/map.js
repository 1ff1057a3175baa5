// Peers database: one row per peer of a swarm document, keyed [user_id, info_hash];
// the value says whether that peer seeds. GET /api/user/<id>/torrents reads it.
function (doc) {
  if (doc.type !== "swarm" || !doc.peers) return;
  for (var id in doc.peers) {
    var peer = doc.peers[id];
    emit([peer.user_id, doc.info_hash], peer.left === 0);
  }
}
