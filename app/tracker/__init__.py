"""The private BitTorrent tracker: announce/scrape, swarms in memory, write-behind to CouchDB.

The tracker runs as its own process (`distleech tracker serve`); the Mika-style
management API lives in the web app and talks to it only through CouchDB.
"""
