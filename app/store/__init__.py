"""The store: the CouchDB client, the event log, the read model and its projections, design
documents, set-up and migration. It calls nothing of the contexts above it; they call it.
"""
