// Registered tracked torrents by torrent_id, value {info_hash, snatches}.
// GET /api/counts lists them in this order; POST /api/torrent keeps ids unique.
function (doc) {
  if (doc.type === 'tracked' && doc.registered && typeof doc.torrent_id === 'number') {
    emit(doc.torrent_id, {info_hash: doc.info_hash, snatches: doc.snatches || 0});
  }
}
