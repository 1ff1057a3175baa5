// Torrents by [site host, site torrent id], value null: app/registry/queries.py finds the torrent
// of a site's id (GET /api/torrents/by-site/..., unavailable by site, conflict checks).
function (doc) {
  if (doc.type === 'torrent' && doc.sites) {
    for (var i = 0; i < doc.sites.length; i++) {
      emit([doc.sites[i].site, doc.sites[i].torrentId], null);
    }
  }
}
