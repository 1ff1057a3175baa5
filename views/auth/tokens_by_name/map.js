// Tokens by name (the id is a random public id; the token's hash lives only in the secrets database):
// `distleech token list/revoke NAME` find them here.
function (doc) {
  if (doc.type === 'token' && doc.name) {
    emit(doc.name, {role: doc.role, revoked: !!doc.revoked});
  }
}
