// Torrents by title search token (group name, artists, year, top directory; folded and
// accent-free, computed by app/registry/keys.py title_tokens), value null: GET /api/torrents?q=
// reads one key per query token.
function (doc) {
  if (doc.type === 'torrent' && doc.search_tokens) {
    for (var i = 0; i < doc.search_tokens.length; i++) {
      emit(doc.search_tokens[i], null);
    }
  }
}
