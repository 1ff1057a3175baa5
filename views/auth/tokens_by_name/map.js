// Tokens by name (the token itself is only stored as a hash, in the id):
// `distleech token list/revoke NAME` find them here.
function (doc) {
  if (doc.type === 'token' && doc.name) {
    emit(doc.name, {role: doc.role, revoked: !!doc.revoked});
  }
}
