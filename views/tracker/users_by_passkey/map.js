// Active tracker users by the SHA-256 of their passkey (the passkey itself is never
// stored); the value is the user id. Used by the members' .torrent download to
// authenticate a passkey, and by the API to keep passkeys unique.
function (doc) {
  if (doc.type === 'trackeruser' && doc.active && doc.passkey_sha256) {
    emit(doc.passkey_sha256, doc.user_id);
  }
}
