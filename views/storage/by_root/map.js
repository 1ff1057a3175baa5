// What the records say is on disk, by [kind, root, location], value [files, bytes, 1]
// (1: one record), with _sum. Source files present on the content root: ["content",
// "content", <content-relative location>], [1, size, 1]. Located torrents: ["ingest", <the
// directory that holds the listing: the volume the scanner walked>, <absolute path>],
// [files, bytes, 1] (padding left out). app/storage/status.py reads it grouped by location
// (group_level=3) in the scheduler's snapshot job and divides by the records there, so two
// torrents at one directory (cross-seeded) count once; app/storage/check.py reads the
// recorded roots (group_level=2) and one root's rows (reduce=false) to check them on disk.
// Torrents located on the content root ("content:/…", app/sources/matching.py) are left out:
// their files are the source files already counted there.
function (doc) {
  if (doc.type === 'sourcefile' && doc.present === true && typeof doc.location === 'string') {
    emit(['content', 'content', doc.location], [1, typeof doc.size === 'number' ? doc.size : 0, 1]);
  } else if (doc.type === 'torrent' && doc.location && typeof doc.location.path === 'string' &&
             doc.location.path.indexOf('content:/') !== 0) {
    var path = doc.location.path;
    var cut = path.lastIndexOf('/');
    var files = 0, bytes = 0, list = doc.files || [];
    for (var i = 0; i < list.length; i++) {
      if (!list[i].pad) {
        files += 1;
        bytes += typeof list[i].size === 'number' ? list[i].size : 0;
      }
    }
    emit(['ingest', cut > 0 ? path.slice(0, cut) : '/', path], [files, bytes, 1]);
  }
}
